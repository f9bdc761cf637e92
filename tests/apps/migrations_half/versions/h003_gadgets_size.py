"""gadgets.size and its index: two DDL statements, not resumable"""

import sqlalchemy as sa
from alembic import op

from tests.apps import migration_probe

revision = "h003"
down_revision = "h002"


def upgrade() -> None:
    migration_probe.run(
        revision,
        lambda: op.add_column("gadgets", sa.Column("size", sa.Integer)),
        lambda: op.create_index("gadgets_size", "gadgets", ["size"]),
    )
