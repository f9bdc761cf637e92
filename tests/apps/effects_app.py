"""A job with an exactly-once effect (ctx.once), for tests/test_effects.py's worker processes.

`fx.charge(order_id)` writes one row into `charges` under `ctx.once(f"charge:{order_id}")`,
then pushes its job id to the Redis list fx:done ($PODJOBS_RECORD_URL). With
$PODJOBS_FX_KILL_AFTER_COMMIT set, the process SIGKILLs itself right after a job's shard
transaction committed, before the job is acked: the job is redelivered to another worker."""

from __future__ import annotations

import os
import signal
from typing import Any

import redis
from sqlalchemy import event, text

import podjobs

_r: redis.Redis | None = None


def rec() -> redis.Redis:
    global _r
    if _r is None:
        _r = redis.Redis.from_url(os.environ["PODJOBS_RECORD_URL"])
    return _r


def _die(session: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@podjobs.job(name="fx.charge", queue="fx", retries=5, backoff=podjobs.constant(0))
def charge(ctx: podjobs.Context, order_id: int) -> None:
    if ctx.once(f"charge:{order_id}"):
        ctx.db.execute(text("INSERT INTO charges (order_id, job_id) VALUES (:o, :j)"),
                       {"o": order_id, "j": ctx.job_id})
    if os.environ.get("PODJOBS_FX_KILL_AFTER_COMMIT"):
        event.listen(ctx.db, "after_commit", _die)
    else:
        rec().rpush("fx:done", ctx.job_id)
