"""Jobs for the pod tests: each writes one row into its tenant's shard."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String, Table, text

import podjobs

metadata = MetaData()
rows = Table(
    "rows", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("n", Integer, nullable=False),
    Column("pod", String(16), nullable=False),
)


@podjobs.job(name="pods.write_row", queue="default")
def write_row(ctx: podjobs.Context, n: int) -> None:
    ctx.db.execute(rows.insert().values(tenant=ctx.tenant, n=n, pod=ctx.pod))


@podjobs.job(name="pods.write_then_fail", queue="default", retries=0)
def write_then_fail(ctx: podjobs.Context, n: int) -> None:
    ctx.db.execute(rows.insert().values(tenant=ctx.tenant, n=n, pod=ctx.pod))
    raise RuntimeError("fails after writing: the row must be rolled back")


@podjobs.job(name="pods.ping", queue="default")
def ping(ctx: podjobs.Context) -> None:
    ctx.db.execute(text("SELECT 1"))
