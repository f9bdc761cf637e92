"""add accounts.email"""

import sqlalchemy as sa
from alembic import op

from tests.apps import migration_probe

revision = "0002"
down_revision = '0001'


def upgrade() -> None:
    migration_probe.run(
        revision,
        lambda: op.add_column("accounts", sa.Column("email", sa.String(128))),
        lambda: op.create_index("accounts_email", "accounts", ["email"]),
    )
