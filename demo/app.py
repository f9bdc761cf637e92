"""The demo's jobs. Worker processes import this module (`--app demo.app`).

1. The single-pod workload: every run appends one JSON line to the Redis list
   `demo:log` (on the Redis whose URL is in $PODJOBS_DEMO_RECORD_URL), so the
   demo can show what ran, in which order, on which attempt, and what failed.
2. The tenant workload: `record_order` inserts one row into `orders` on the
   shard of the pod that runs it (`ctx.db`), with the tenant, the pod and the
   worker's pid, so the demo can read back from each shard which pod ran what.
3. The backfill: `BackfillFingerprints`, an iteration job, fills the new column
   `accounts.fingerprint` of its tenant's rows on its pod's shard, a batch per item
   in keyset order over id (index (tenant, id)), checkpointed after every batch; each row's
   `backfilled` counts how often it was updated. Its hooks append one JSON line per
   run (start / resume with the cursor, attempt and pid; shutdown) to the Redis
   list `demo:backfill:runs`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    select,
    text,
    update,
)

import podjobs
from podjobs.iteration import IterationJob, enumerators

LOG_KEY = "demo:log"
#: flaky_webhook fails this many attempts, then succeeds
FLAKY_FAILURES = 2

_r: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _r
    if _r is None:
        _r = redis.Redis.from_url(os.environ["PODJOBS_DEMO_RECORD_URL"])
    return _r


def record(ctx: podjobs.Context, args: list[Any], ok: bool = True, error: str = "") -> None:
    """Append what this run did to demo:log."""
    entry = {
        "job": ctx.job_name.rsplit(".", 1)[-1], "args": args, "queue": ctx.queue,
        "attempt": ctx.attempt, "ok": ok, "error": error, "pid": os.getpid(),
        "waited_ms": int(time.time() * 1000) - ctx.enqueued_at_ms,
    }
    _redis().rpush(LOG_KEY, json.dumps(entry))


@podjobs.job(queue="critical")
def send_welcome_email(ctx: podjobs.Context, user_id: int) -> None:
    record(ctx, [user_id])


@podjobs.job(queue="default")
def resize_image(ctx: podjobs.Context, image_id: int, size: str) -> None:
    time.sleep(0.005)
    record(ctx, [image_id, size])


@podjobs.job(queue="low")
def rebuild_search_index(ctx: podjobs.Context, shop_id: int) -> None:
    record(ctx, [shop_id])


@podjobs.job(queue="default", retries=3, backoff=podjobs.constant(0.2))
def flaky_webhook(ctx: podjobs.Context, hook_id: int) -> None:
    if ctx.attempt <= FLAKY_FAILURES:
        msg = f"webhook endpoint returned 503 (attempt {ctx.attempt})"
        record(ctx, [hook_id], ok=False, error=msg)
        raise ConnectionError(msg)
    record(ctx, [hook_id])


@podjobs.job(queue="low", retries=1, backoff=podjobs.constant(0.2))
def broken_export(ctx: podjobs.Context, export_id: int) -> None:
    msg = f"export {export_id}: bucket 's3://exports' does not exist"
    record(ctx, [export_id], ok=False, error=msg)
    raise RuntimeError(msg)


# -- tenants on pods ----------------------------------------------------------------------

metadata = MetaData()
#: created on every pod's shard by the demo; each row is one record_order run
orders = Table(
    "orders", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("pod", String(16), nullable=False),
    Column("order_no", Integer, nullable=False),
    Column("pid", Integer, nullable=False),
)


@podjobs.job(queue="default")
def record_order(ctx: podjobs.Context, order_no: int) -> None:
    """Enqueued with tenant=...; runs on the tenant's pod and writes to that pod's shard."""
    ctx.db.execute(orders.insert().values(tenant=ctx.tenant, pod=ctx.pod, order_no=order_no,
                                          pid=os.getpid()))


# -- a backfill that survives a worker restart ---------------------------------------------

RUNS_KEY = "demo:backfill:runs"
#: the backfilled value: Knuth's multiplicative hash of the id
FINGERPRINT_MUL, FINGERPRINT_MOD = 2654435761, 2**32

backfill_metadata = MetaData()
#: created on one pod's shard by the demo; `fingerprint` is the column being backfilled
accounts = Table(
    "accounts", backfill_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("tenant", String(64), nullable=False),
    Column("fingerprint", BigInteger, nullable=True),
    Column("backfilled", Integer, nullable=False, default=0),
    Index("ix_accounts_tenant_id", "tenant", "id"),
)


def fingerprint(account_id: int) -> int:
    """What the backfill writes into accounts.fingerprint."""
    return account_id * FINGERPRINT_MUL % FINGERPRINT_MOD


class BackfillFingerprints(IterationJob):
    """Sets `fingerprint` of every account of the job's tenant, `batch` rows per item;
    sleeps `pause_s` after each batch to leave the primary some room."""

    job_name = "demo.backfill_fingerprints"
    queue = "low"
    checkpoint_every = 1  # a checkpoint (shard commit + cursor in Redis) after every batch
    max_runtime = 60.0

    def build_enumerator(self, ctx: podjobs.Context, cursor: Any, *, batch: int,
                         pause_s: float = 0.0) -> Any:
        mine = select(accounts.c.id).where(accounts.c.tenant == ctx.tenant)  # ix (tenant, id)
        return enumerators.batches(ctx.db, mine, accounts.c.id, cursor, batch_size=batch,
                                   count=True)

    def each_iteration(self, ctx: podjobs.Context, rows: Any, *, batch: int,
                       pause_s: float = 0.0) -> None:
        ids = [r.id for r in rows]
        ctx.db.execute(update(accounts)
                       .where(accounts.c.tenant == ctx.tenant, accounts.c.id.in_(ids))
                       .values(fingerprint=accounts.c.id * FINGERPRINT_MUL % FINGERPRINT_MOD,
                               backfilled=accounts.c.backfilled + 1))
        if pause_s:
            time.sleep(pause_s)

    def _run_log(self, ctx: podjobs.Context, hook: str) -> None:
        _redis().rpush(RUNS_KEY, json.dumps({"hook": hook, "cursor": self.cursor,
                                             "attempt": ctx.attempt, "pid": os.getpid()}))

    def on_start(self, ctx: podjobs.Context, **_: Any) -> None:
        self._run_log(ctx, "start")

    def on_resume(self, ctx: podjobs.Context, **_: Any) -> None:
        self._run_log(ctx, "resume")

    def on_shutdown(self, ctx: podjobs.Context, **_: Any) -> None:
        self._run_log(ctx, "shutdown")


# -- a data migration's backfill (demo/migrations/versions/0002) ---------------------------

#: what the backfill writes into orders.total_cents: order_no * this (a made-up price)
PRICE_CENTS = 1250


class BackfillOrderTotals(IterationJob):
    """Fills `orders.total_cents` where it is NULL, `batch` rows per item in id order.

    Enqueued by the migration job of revision 0002 on each shard's pod, after the
    column was added; a tenant-less job, so it covers the whole shard. (`orders`
    above describes the schema before 0002, so the update is written in SQL.)"""

    job_name = "demo.backfill_order_totals"
    queue = "low"

    def build_enumerator(self, ctx: podjobs.Context, cursor: Any, *, batch: int = 50) -> Any:
        return enumerators.batches(ctx.db, select(orders.c.id), [orders.c.id], cursor,
                                   batch_size=batch, count=True)

    def each_iteration(self, ctx: podjobs.Context, rows: Any, *, batch: int = 50) -> None:
        stmt = text("UPDATE orders SET total_cents = order_no * :price WHERE id IN :ids "
                    "AND total_cents IS NULL").bindparams(bindparam("ids", expanding=True))
        ctx.db.execute(stmt, {"price": PRICE_CENTS, "ids": [r.id for r in rows]})
