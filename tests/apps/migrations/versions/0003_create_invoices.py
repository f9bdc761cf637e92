"""create invoices"""

import sqlalchemy as sa
from alembic import op

from tests.apps import migration_probe

revision = "0003"
down_revision = '0002'


def upgrade() -> None:
    migration_probe.run(
        revision,
        lambda: op.create_table("invoices", sa.Column("id", sa.Integer, primary_key=True), sa.Column("account_id", sa.Integer), sa.Column("cents", sa.BigInteger)),
    )
