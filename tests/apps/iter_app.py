"""Iteration jobs the iteration tests run in real worker processes and in-process workers.
Each records what it did in Redis (the URL in $PODJOBS_RECORD_URL):

- rec:items:TAG   hash item -> times processed
- rec:order:TAG   list of items in the order processed
- rec:hooks:TAG   list of "start", "resume:CURSOR:ATTEMPT", "shutdown:CURSOR", "complete"
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from sqlalchemy import Column, Integer, MetaData, Table, select, update

import podjobs
from podjobs.context import Context
from podjobs.iteration import IterationJob, enumerators

_r: redis.Redis | None = None


def rec() -> redis.Redis:
    global _r
    if _r is None:
        _r = redis.Redis.from_url(os.environ["PODJOBS_RECORD_URL"])
    return _r


class Count(IterationJob):
    """Items 0..n-1 (or its part of them), `sleep` seconds each."""

    job_name = "it.count"
    retries = 3
    backoff = staticmethod(podjobs.constant(0.05))

    def build_enumerator(self, ctx: Context, cursor: Any, *, tag: str, n: int,
                         sleep: float = 0.0) -> Any:
        lo, hi = self.part_range(ctx, 0, n)
        return enumerators.int_range(lo, hi, cursor)

    def each_iteration(self, ctx: Context, i: int, *, tag: str, n: int, sleep: float = 0.0) -> None:
        if sleep:
            time.sleep(sleep)
        pipe = rec().pipeline(transaction=False)
        pipe.hincrby(f"rec:items:{tag}", str(i), 1)
        pipe.rpush(f"rec:order:{tag}", i)
        pipe.execute()

    def on_start(self, ctx: Context, *, tag: str, **_: Any) -> None:
        rec().rpush(f"rec:hooks:{tag}", "start")

    def on_resume(self, ctx: Context, *, tag: str, **_: Any) -> None:
        rec().rpush(f"rec:hooks:{tag}", f"resume:{json.dumps(self.cursor)}:{ctx.attempt}")

    def on_shutdown(self, ctx: Context, *, tag: str, **_: Any) -> None:
        rec().rpush(f"rec:hooks:{tag}", f"shutdown:{json.dumps(self.cursor)}")

    def on_complete(self, ctx: Context, *, tag: str, **_: Any) -> None:
        rec().rpush(f"rec:hooks:{tag}", "complete")


class CountEvery5(Count):
    job_name = "it.count_every5"
    checkpoint_every = 5


class ShortRuns(Count):
    """Stops after 0.2 s of running and re-enqueues itself."""

    job_name = "it.short_runs"
    max_runtime = 0.2


class Throttled(Count):
    """Backs off 0.3 s while the key rec:throttle exists."""

    job_name = "it.throttled"


Throttled.throttle_on(lambda: bool(rec().exists("rec:throttle")), backoff=0.3)


class FailAt(Count):
    """Raises at item `fail_at` on its first attempt."""

    job_name = "it.fail_at"

    def each_iteration(self, ctx: Context, i: int, *, tag: str, n: int, sleep: float = 0.0,
                       fail_at: int = -1) -> None:
        if i == fail_at and ctx.attempt == 1:
            raise RuntimeError(f"planned failure at item {i}")
        super().each_iteration(ctx, i, tag=tag, n=n, sleep=sleep)

    def build_enumerator(self, ctx: Context, cursor: Any, *, tag: str, n: int,
                         sleep: float = 0.0, fail_at: int = -1) -> Any:
        return enumerators.int_range(0, n, cursor)


@podjobs.job(name="it.done")
def done(ctx: podjobs.Context, tag: str) -> None:
    rec().rpush(f"rec:callback:{tag}", ctx.job_id)


# -- a backfill on the shard ----------------------------------------------------------

metadata = MetaData()
items = Table(
    "iter_items", metadata,
    Column("grp", Integer, primary_key=True, autoincrement=False),
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("value", Integer, nullable=False),
    Column("processed", Integer, nullable=False, default=0),
)


class Backfill(IterationJob):
    """Doubles `value` and counts `processed` for every row, a batch at a time, in keyset
    order over (grp, id)."""

    job_name = "it.backfill"
    max_runtime = 0.3
    retries = 3
    backoff = staticmethod(podjobs.constant(0.05))

    def build_enumerator(self, ctx: Context, cursor: Any, *, batch: int = 50,
                         sleep: float = 0.0) -> Any:
        return enumerators.batches(ctx.db, select(items.c.grp, items.c.id),
                                   [items.c.grp, items.c.id], cursor, batch_size=batch, count=True)

    def each_iteration(self, ctx: Context, rows: Any, *, batch: int = 50, sleep: float = 0.0) -> None:
        for grp in sorted({r.grp for r in rows}):
            ids = [r.id for r in rows if r.grp == grp]
            ctx.db.execute(update(items).where(items.c.grp == grp, items.c.id.in_(ids))
                           .values(value=items.c.value * 2, processed=items.c.processed + 1))
        if sleep:
            time.sleep(sleep)


class BackfillUninterrupted(Backfill):
    job_name = "it.backfill_uninterrupted"
    max_runtime = None


class BackfillPart(Backfill):
    """Backfill of one keyset slice (a part of enqueue_parallel(keyset_parts(...)))."""

    job_name = "it.backfill_part"

    def build_enumerator(self, ctx: Context, cursor: Any, *, batch: int = 50,
                         sleep: float = 0.0) -> Any:
        after, until = self.part_keys(ctx)
        return enumerators.batches(ctx.db, select(items.c.grp, items.c.id),
                                   [items.c.grp, items.c.id], cursor, batch_size=batch,
                                   count=True, after=after, until=until)
