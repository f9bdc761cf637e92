"""`SqlStore`: iteration checkpoints on a pod whose queue is on the SQL backend (table
pj_iterations, one row per iteration job; the Redis backend keeps the hash pj:iter:{id}).

Each call is one transaction: the job's row read under a write lock (FOR UPDATE; SQLite's
BEGIN IMMEDIATE), the same decision `MemoryStore` makes on that record (run tokens: a write of
a run that another run replaced is "lost"), the row written back. Parallel iteration
(`enqueue_parallel`, groups) is refused on SQL with NotSupported; `request(job_id, control)`
asks a running job to pause or cancel (what `podjobs iterations pause|cancel` do on Redis).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, insert, select, update

from podjobs.context import Context
from podjobs.iteration.store import MemoryRecord, MemoryStore, Start
from podjobs.sqlbackend import SqlBackend
from podjobs.sqlbackend.backend import refuse
from podjobs.sqlbackend.tables import iterations

T = TypeVar("T")


def _record(row: Any) -> MemoryRecord:
    m = row._mapping
    return MemoryRecord(
        state=m["state"], cursor=None if m["cursor"] is None else json.loads(m["cursor"]),
        done=int(m["done"]), total=None if m["total"] is None else int(m["total"]),
        runs=int(m["runs"]), interrupted=int(m["interrupted"]), control=m["control"],
        token=m["run"], reason=m["reason"], error=m["error"] or "", parked=m["parked"],
        checkpoints=int(m["checkpoints"]))


def _values(r: MemoryRecord) -> dict[str, Any]:
    return {"state": r.state, "cursor": None if r.cursor is None else json.dumps(r.cursor),
            "done": r.done, "total": r.total, "runs": r.runs, "interrupted": r.interrupted,
            "checkpoints": r.checkpoints, "control": r.control, "run": r.token,
            "reason": r.reason[:200], "error": r.error or None, "parked": r.parked}


class SqlStore:
    """The `Store` of iteration runs on a SQL pod (see the module docstring)."""

    def __init__(self, backend: SqlBackend) -> None:
        self.backend = backend

    def _with(self, ctx: Context, what: str, fn: Callable[[MemoryStore], T]) -> T:
        if isinstance(ctx.payload.get("part"), dict):
            raise refuse("a parallel iteration (a part of a group)",
                         "run parallel iterations on a Redis pod")
        job_id = ctx.job_id

        def go(c: Connection) -> T:
            row = c.execute(select(iterations).where(iterations.c.job_id == job_id)
                            .with_for_update()).first()
            rec = _record(row) if row is not None else MemoryRecord()
            out = fn(MemoryStore({job_id: rec}))
            vals = {**_values(rec), "updated_ms": self.backend.now_ms()}
            if row is None:
                c.execute(insert(iterations).values(job_id=job_id, job=ctx.job_name,
                                                    queue=ctx.queue, tenant=ctx.tenant or "",
                                                    **vals))
            else:
                c.execute(update(iterations).where(iterations.c.job_id == job_id).values(**vals))
            return out

        result: T = self.backend._retrying(what, go)
        return result

    def record(self, job_id: str) -> MemoryRecord | None:
        """The job's record as it is now (None if it never ran)."""
        with self.backend.errors("read an iteration"), \
                self.backend.engine.connect().execution_options(pj_read=True) as c:
            row = c.execute(select(iterations).where(iterations.c.job_id == job_id)).first()
            c.rollback()
        return None if row is None else _record(row)

    def request(self, job_id: str, control: str) -> bool:
        """Ask the job to "pause" or "cancel" at its next checkpoint; False if unknown."""
        if control not in ("pause", "cancel", ""):
            raise ValueError(f"control {control!r} is not pause, cancel or ''")
        n = self.backend._retrying(f"{control or 'clear'} an iteration", lambda c: c.execute(
            update(iterations).where(iterations.c.job_id == job_id).values(control=control)
        ).rowcount)
        return bool(n)

    # -- the Store protocol ---------------------------------------------------------------

    def start(self, ctx: Context, token: str, payload: str) -> Start:
        return self._with(ctx, "start an iteration job", lambda m: m.start(ctx, token, payload))

    def checkpoint(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None) -> str:
        return self._with(ctx, "checkpoint an iteration",
                          lambda m: m.checkpoint(ctx, token, cursor, delta, total))

    def poll(self, ctx: Context, token: str) -> str:
        rec = self.record(ctx.job_id)
        if rec is None or rec.token != token:
            return "lost"
        return rec.control

    def interrupt(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None,
                  reason: str) -> str:
        return self._with(ctx, "interrupt an iteration",
                          lambda m: m.interrupt(ctx, token, cursor, delta, total, reason))

    def park(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None,
             payload: str) -> str:
        return self._with(ctx, "pause an iteration",
                          lambda m: m.park(ctx, token, cursor, delta, total, payload))

    def finish(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None,
               state: str) -> str:
        return self._with(ctx, "finish an iteration",
                          lambda m: m.finish(ctx, token, cursor, delta, total, state))

    def error(self, ctx: Context, token: str, cursor: Any, delta: int, message: str,
              keep_cursor: bool) -> str:
        return self._with(ctx, "record an iteration error",
                          lambda m: m.error(ctx, token, cursor, delta, message[:2000], keep_cursor))
