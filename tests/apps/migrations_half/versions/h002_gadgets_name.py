"""gadgets.name and its index: two DDL statements, declared resumable"""

import sqlalchemy as sa
from alembic import op

from tests.apps import migration_probe

revision = "h002"
down_revision = "h001"
# the same statements in the same order on every run: a retry goes on after the last one
# an earlier run applied (README "Half-applied revisions")
resumable = True


def upgrade() -> None:
    migration_probe.run(
        revision,
        lambda: op.add_column("gadgets", sa.Column("name", sa.String(64))),
        lambda: op.create_index("gadgets_name", "gadgets", ["name"]),
    )
