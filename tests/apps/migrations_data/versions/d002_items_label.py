"""add items.label, filled by a backfill (a data migration)"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "d002"
down_revision = "d001"


def upgrade() -> None:
    op.add_column("items", sa.Column("label", sa.String(32), nullable=True))


def backfill() -> Any:
    """The data step: runs on the shard as an iteration job after the schema step."""
    from tests.apps.data_migration_app import FillLabels

    return FillLabels.call(batch=20, sleep=0.05)
