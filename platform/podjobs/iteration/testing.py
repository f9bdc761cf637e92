"""Run an iteration job inline, without a worker or Redis: for your tests.

    from podjobs.iteration.testing import iterate

    run = iterate(Backfill, iterations=3, table="users")   # exactly 3 items, then stops
    assert run.state == "interrupted" and run.cursor == ...
    run = run.next(iterations=2)                          # 2 more, from the cursor
    run = run.next()                                      # to completion
    assert run.state == "succeeded" and run.done == 10

The job runs in this thread with the same run loop a worker uses (checkpoints, hooks,
pause/cancel requests), against a `MemoryStore`. `db=` gives `ctx.db` (a SQLAlchemy
session; committed at each checkpoint like in a worker), `shard_url=` makes one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from podjobs.context import Context, _set_current
from podjobs.ids import new_id
from podjobs.invoke import Reenqueue
from podjobs.iteration.job import STORE_EXTRA, IterationJob, run_iteration
from podjobs.iteration.store import MemoryStore


@dataclass
class InlineRun:
    """What one inline run did. state: succeeded | interrupted (stopped after the asked
    number of items, or by max runtime/throttle/stopping) | paused | cancelled."""

    job: type[IterationJob]
    job_id: str
    state: str
    #: items processed by this call, and by all calls on this job id
    items: int
    done: int
    cursor: Any
    #: why an interrupted run stopped (limit, max_runtime, throttled, shutdown)
    reason: str
    #: seconds a throttled run asked to wait
    delay: float
    store: MemoryStore
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)

    def next(self, iterations: int | None = None) -> InlineRun:
        """Go on from where this run stopped."""
        return iterate(self.job, *self.args, iterations=iterations, job_id=self.job_id,
                       store=self.store, **self.options, **self.kwargs)


def iterate(job: type[IterationJob], *args: Any, iterations: int | None = None,
            cursor: Any = None, db: Any = None, shard_url: str | None = None,
            tenant: str | None = None, store: MemoryStore | None = None,
            job_id: str | None = None, stopping: threading.Event | None = None,
            **kwargs: Any) -> InlineRun:
    """Run `job` with these arguments for exactly `iterations` items (None: to the end),
    starting after `cursor` (or where the same `job_id` in `store` stopped)."""
    store = store if store is not None else MemoryStore()
    jid = job_id or new_id()
    jd = job.definition
    payload: dict[str, Any] = {"id": jid, "job": jd.name, "queue": jd.options.queue,
                               "args": list(args), "kwargs": kwargs,
                               "enqueued_at": int(time.time() * 1000), "attempt": 0}
    if cursor is not None:
        payload["cursor"] = cursor
    if tenant is not None:
        payload["tenant"] = tenant
    ctx = Context(jid, jd.name, 1, jd.options.queue, payload["enqueued_at"], tenant=tenant,
                  worker_id="inline", payload=payload, shard_url=shard_url, stopping=stopping)
    if db is not None:
        ctx._db = db
    ctx.extras[STORE_EXTRA] = store
    opts = {"db": db, "shard_url": shard_url, "tenant": tenant, "stopping": stopping}
    before = store.record(jid).done
    _set_current(ctx)
    try:
        res = run_iteration(job(), ctx, list(args), kwargs, store=store, max_items=iterations)
        state, reason, delay = res.state, res.reason, 0.0
    except Reenqueue as exc:
        state, reason, delay = "interrupted", exc.reason, exc.delay
    finally:
        _set_current(None)
    rec = store.record(jid)
    if shard_url is not None and db is None:
        ctx._finish_db(True)
    items = rec.done - before
    return InlineRun(job, jid, state, items, rec.done, rec.cursor, reason, delay, store, args,
                     kwargs, opts)

