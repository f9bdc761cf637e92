"""The SQL backend's first tables: ready, due, dead, unique keys, workers.

Revision ID: pj0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "pj0001"
down_revision = None
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PAYLOAD = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "pj_ready",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("job_id", sa.String(80), nullable=False),
        sa.Column("worker", sa.String(160), nullable=False, server_default=""),
        sa.Column("request", sa.String(40), nullable=False, server_default=""),
        sa.Column("payload", PAYLOAD, nullable=False),
    )
    op.create_index("pj_ready_take", "pj_ready", ["queue", "worker", "seq"])
    op.create_index("pj_ready_owner", "pj_ready", ["worker", "job_id"])
    op.create_table(
        "pj_due",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("due_ms", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.String(80), nullable=False),
        sa.Column("payload", PAYLOAD, nullable=False),
    )
    op.create_index("pj_due_when", "pj_due", ["queue", "due_ms"])
    op.create_table(
        "pj_dead",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("job_id", sa.String(80), nullable=False),
        sa.Column("died_ms", sa.BigInteger(), nullable=False),
        sa.Column("payload", PAYLOAD, nullable=False),
    )
    op.create_index("pj_dead_when", "pj_dead", ["died_ms"])
    op.create_index("pj_dead_job", "pj_dead", ["job_id"])
    op.create_table(
        "pj_unique",
        sa.Column("ukey", sa.String(190), primary_key=True),
        sa.Column("owner", sa.String(80), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "pj_workers",
        sa.Column("worker_id", sa.String(160), primary_key=True),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("queues", sa.Text(), nullable=False),
        sa.Column("info", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    for t in ("pj_workers", "pj_unique", "pj_dead", "pj_due", "pj_ready"):
        op.drop_table(t)
