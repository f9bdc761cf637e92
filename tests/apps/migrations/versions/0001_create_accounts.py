"""create accounts"""

import sqlalchemy as sa
from alembic import op

from tests.apps import migration_probe

revision = "0001"
down_revision = None


def upgrade() -> None:
    migration_probe.run(
        revision,
        lambda: op.create_table("accounts", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(64))),
    )
