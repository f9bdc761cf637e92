"""create gadgets"""

import sqlalchemy as sa
from alembic import op

revision = "h001"
down_revision = None


def upgrade() -> None:
    op.create_table("gadgets", sa.Column("id", sa.Integer, primary_key=True))
