"""add invoices.paid"""

import sqlalchemy as sa
from alembic import op

from tests.apps import migration_probe

revision = "0004"
down_revision = '0003'


def upgrade() -> None:
    migration_probe.run(
        revision,
        lambda: op.add_column("invoices", sa.Column("paid", sa.Boolean, server_default=sa.false())),
    )
