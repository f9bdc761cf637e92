"""Status records of tracked jobs: one row per job (the Redis backend's pj:status:{id} hash).

Revision ID: pj0004
Revises: pj0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "pj0004"
down_revision = "pj0003"
branch_labels = None
depends_on = None

PAYLOAD = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "pj_status",
        sa.Column("job_id", sa.String(80), primary_key=True),
        sa.Column("fields", PAYLOAD, nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("pj_status_expiry", "pj_status", ["expires_ms"])


def downgrade() -> None:
    op.drop_index("pj_status_expiry", "pj_status")
    op.drop_table("pj_status")
