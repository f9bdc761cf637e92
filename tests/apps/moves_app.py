"""Jobs and a data-copy hook for the tenant-move tests."""

from __future__ import annotations

import time

from sqlalchemy import Column, Double, Integer, MetaData, String, Table, create_engine, select

import podjobs
from podjobs.pods.topology import Pod

metadata = MetaData()
runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("n", Integer, nullable=False),
    Column("pod", String(16), nullable=False),
    Column("at", Double, nullable=False),  # a double: FLOAT would round epoch seconds to minutes
)
profile = Table(
    "profile", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("name", String(64), nullable=False),
)


@podjobs.job(name="moves.record_run", queue="default")
def record_run(ctx: podjobs.Context, n: int, sleep: float = 0.005) -> None:
    time.sleep(sleep)
    ctx.db.execute(runs.insert().values(tenant=ctx.tenant, n=n, pod=ctx.pod, at=time.time()))


@podjobs.job(name="moves.long_steps", queue="default")
def long_steps(ctx: podjobs.Context, steps: int, sleep: float = 0.01) -> None:
    """A long job with a checkpoint after each step; stops when asked (deploy or move)."""
    start = int(ctx.payload.get("cursor", 0))
    for i in range(start, steps):
        time.sleep(sleep)
        ctx.db.execute(runs.insert().values(tenant=ctx.tenant, n=i, pod=ctx.pod, at=time.time()))
        ctx.db.commit()  # the step and its checkpoint go together
        if ctx.stopping.is_set() and i + 1 < steps:
            raise podjobs.Reenqueue(updates={"cursor": i + 1})


def copy_profile(tenant: str, src: Pod, dst: Pod) -> None:
    """Copy the tenant's rows (idempotent: replace on the destination)."""
    s, d = create_engine(src.shard_url), create_engine(dst.shard_url)
    try:
        with s.connect() as cs:
            rows = [dict(r._mapping) for r in cs.execute(select(profile).where(profile.c.tenant == tenant))]
        with d.begin() as cd:
            cd.execute(profile.delete().where(profile.c.tenant == tenant))
            if rows:
                cd.execute(profile.insert(), rows)
    finally:
        s.dispose()
        d.dispose()
