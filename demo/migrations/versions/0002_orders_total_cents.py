"""orders: total_cents, filled for existing rows by a backfill (a data migration)

The schema step adds a nullable column; the backfill, an iteration job on the
same shard, fills it batch by batch. The revision counts as complete only when
the backfill has succeeded.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("orders", sa.Column("total_cents", sa.BigInteger, nullable=True))


def backfill() -> Any:
    from demo.app import BackfillOrderTotals

    return BackfillOrderTotals.call(batch=50)
