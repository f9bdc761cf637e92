"""Iteration checkpoints: one row per iteration job (the Redis backend's pj:iter:{id} hash).

Revision ID: pj0003
Revises: pj0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "pj0003"
down_revision = "pj0002"
branch_labels = None
depends_on = None

PAYLOAD = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "pj_iterations",
        sa.Column("job_id", sa.String(80), primary_key=True),
        sa.Column("job", sa.String(200), nullable=False, server_default=""),
        sa.Column("queue", sa.String(100), nullable=False, server_default=""),
        sa.Column("tenant", sa.String(100), nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cursor", PAYLOAD, nullable=True),
        sa.Column("done", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("total", sa.BigInteger(), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("interrupted", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("checkpoints", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("control", sa.String(16), nullable=False, server_default=""),
        sa.Column("run", sa.String(80), nullable=False, server_default=""),
        sa.Column("reason", sa.String(200), nullable=False, server_default=""),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("parked", PAYLOAD, nullable=True),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pj_iterations")
