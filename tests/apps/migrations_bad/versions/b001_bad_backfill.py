"""a revision whose backfill() is not an iteration job: refused before any DDL"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "b001"
down_revision = None


def upgrade() -> None:
    op.create_table("never_created", sa.Column("id", sa.Integer, primary_key=True))


def backfill() -> Any:
    from tests.apps.core_app import record

    return record.call("bad-backfill")
