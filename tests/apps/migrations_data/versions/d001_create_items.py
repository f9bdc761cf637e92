"""create items with 200 rows"""

import sqlalchemy as sa
from alembic import op

revision = "d001"
down_revision = None


def upgrade() -> None:
    t = op.create_table("items", sa.Column("id", sa.Integer, primary_key=True))
    op.bulk_insert(t, [{"id": i} for i in range(1, 201)])
