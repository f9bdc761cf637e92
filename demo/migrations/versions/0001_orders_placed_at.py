"""orders: placed_at (defaults to now) and an index on (tenant, order_no)

Safe before and after: record_order does not name the new column.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("placed_at", sa.DateTime, nullable=True,
                                      server_default=sa.func.current_timestamp()))
    op.create_index("ix_orders_tenant_order_no", "orders", ["tenant", "order_no"])
