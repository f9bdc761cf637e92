"""Paused queues and enqueue request markers.

Revision ID: pj0002
Revises: pj0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "pj0002"
down_revision = "pj0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pj_paused",
        sa.Column("queue", sa.String(100), primary_key=True),
    )
    op.create_table(
        "pj_requests",
        sa.Column("request", sa.String(80), primary_key=True),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("pj_requests_expiry", "pj_requests", ["expires_ms"])


def downgrade() -> None:
    op.drop_index("pj_requests_expiry", table_name="pj_requests")
    op.drop_table("pj_requests")
    op.drop_table("pj_paused")
