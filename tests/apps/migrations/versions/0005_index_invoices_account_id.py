"""index invoices.account_id"""

from alembic import op

from tests.apps import migration_probe

revision = "0005"
down_revision = '0004'


def upgrade() -> None:
    migration_probe.run(
        revision,
        lambda: op.create_index("invoices_account", "invoices", ["account_id"]),
    )
