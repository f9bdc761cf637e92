"""Where an iteration job's cursor and progress live: `RedisStore` on the pod's Redis (one
Lua script per state change, `lua/iter_*.lua`), and `MemoryStore` for inline runs and tests.

1. `start` decides whether a delivered job runs (finished, cancelled and parked jobs do not)
   and returns the cursor of its last checkpoint; every run gets a token, and every later
   write of that run is refused ("lost") once another run of the same job has started.
2. `checkpoint` saves cursor and items done and answers a pending pause or cancel.
3. `interrupt`, `park`, `finish` and `error` end a run (re-enqueued, paused, succeeded or
   cancelled, retried), each in one round trip together with the last checkpoint.

The job hash `pj:iter:{id}` has the fields: state, job, queue, tenant, created_ms,
started_ms, updated_ms, finished_ms (Redis clock), cursor (JSON), done, total, elapsed_ms
(time spent running, up to tick_ms), tick_ms, runs, interrupted, reason (why the last run
stopped), error, control ("" | pause | cancel), prev (state before a pause), parked (the
payload of a parked job), run (token of the current run), worker, group, part.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from podjobs import keys as core_keys
from podjobs.backend import RedisBackend
from podjobs.context import Context
from podjobs.errors import PayloadError
from podjobs.gateway import text
from podjobs.iteration import iterkeys
from podjobs.payload import check_value

#: seconds the hash of a succeeded or cancelled job is kept (7 days)
FINISHED_TTL_S = 7 * 24 * 3600

SCRIPTS = ("iter_register", "iter_group", "iter_start", "iter_checkpoint", "iter_interrupt",
           "iter_park", "iter_finish", "iter_error", "iter_pause", "iter_resume", "iter_cancel")


def dump_cursor(cursor: Any) -> str:
    """The cursor as JSON; a cursor JSON cannot carry is refused, naming it."""
    try:
        check_value(cursor, "iteration cursor")
    except PayloadError as exc:
        raise PayloadError(f"{exc}; make the enumerator yield JSON cursors (ids, ISO strings)") from None
    return json.dumps(cursor, separators=(",", ":"))


def load_cursor(raw: str | bytes | None) -> Any:
    if raw is None or raw == "" or raw == b"":
        return None
    return json.loads(raw)


@dataclass
class Start:
    """What `start` decided. decision: run | paused | cancelled | succeeded."""

    decision: str
    cursor: Any = None
    done: int = 0
    first: bool = True


class Store(Protocol):
    def start(self, ctx: Context, token: str, payload: str) -> Start: ...

    def checkpoint(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None) -> str: ...

    def poll(self, ctx: Context, token: str) -> str: ...

    def interrupt(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None,
                  reason: str) -> str: ...

    def park(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None,
             payload: str) -> str: ...

    def finish(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None,
               state: str) -> str: ...

    def error(self, ctx: Context, token: str, cursor: Any, delta: int, message: str,
              keep_cursor: bool) -> str: ...


class Lua:
    """The iteration scripts (`lua/iter_*.lua`) on one RedisBackend, sent through its
    gateway (`podjobs.gateway`: one loader, one EVALSHA each)."""

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend

    def run(self, name: str, what: str, keys_: Sequence[str], args: Sequence[Any]) -> Any:
        if name not in SCRIPTS:
            raise ValueError(f"{name!r} is not an iteration script ({', '.join(SCRIPTS)})")
        return self.backend.run(name, what, keys_, args)


def lua_for(backend: RedisBackend) -> Lua:
    return Lua(backend)


def _total(total: int | None) -> str:
    return "" if total is None else str(int(total))


class RedisStore:
    """Checkpoints and states in the pod's Redis."""

    def __init__(self, backend: RedisBackend) -> None:
        self.lua = lua_for(backend)

    def start(self, ctx: Context, token: str, payload: str) -> Start:
        pc = ctx.payload.get("cursor")
        res = self.lua.run("iter_start", "start an iteration job",
                           [iterkeys.job(ctx.job_id), iterkeys.INDEX],
                           [ctx.job_id, ctx.job_name, ctx.queue, ctx.tenant or "", token,
                            ctx.worker_id or "", payload, "" if pc is None else dump_cursor(pc),
                            FINISHED_TTL_S])
        decision = text(res[0])
        if decision != "run":
            return Start(decision)
        return Start(decision, load_cursor(res[1]), int(res[2]), bool(int(res[3])))

    def checkpoint(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None) -> str:
        return text(self.lua.run("iter_checkpoint", "checkpoint an iteration", [iterkeys.job(ctx.job_id)],
                                 [token, dump_cursor(cursor), delta, _total(total)]))

    def poll(self, ctx: Context, token: str) -> str:
        with self.lua.backend.errors("read an iteration's requests"):
            run, control = self.lua.backend.redis.hmget(iterkeys.job(ctx.job_id), ["run", "control"])
        if run is None or text(run) != token:
            return "lost"
        return text(control) if control else ""

    def interrupt(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None,
                  reason: str) -> str:
        return text(self.lua.run("iter_interrupt", "interrupt an iteration", [iterkeys.job(ctx.job_id)],
                                 [token, dump_cursor(cursor), delta, _total(total), reason]))

    def park(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None,
             payload: str) -> str:
        return text(self.lua.run("iter_park", "pause an iteration", [iterkeys.job(ctx.job_id)],
                                 [token, dump_cursor(cursor), delta, _total(total), payload]))

    def finish(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None,
               state: str) -> str:
        ks = [iterkeys.job(ctx.job_id)]
        part = ctx.payload.get("part")
        args: list[Any] = [token, dump_cursor(cursor), delta, _total(total), state, FINISHED_TTL_S]
        if isinstance(part, dict) and part.get("group"):
            gid, cbq = str(part["group"]), str(part.get("cbq") or "")
            ks += [iterkeys.group(gid), iterkeys.group_done(gid), core_keys.queue(cbq or "default"),
                   core_keys.wake(cbq or "default"), core_keys.QUEUES]
            args += [int(part.get("index", 0)), cbq or "default"]
        else:
            args += ["", ""]
        return text(self.lua.run("iter_finish", "finish an iteration", ks, args))

    def error(self, ctx: Context, token: str, cursor: Any, delta: int, message: str,
              keep_cursor: bool) -> str:
        return text(self.lua.run("iter_error", "record an iteration error", [iterkeys.job(ctx.job_id)],
                                 [token, "" if keep_cursor else dump_cursor(cursor), delta,
                                  message[:2000]]))


@dataclass
class MemoryRecord:
    state: str = "enqueued"
    cursor: Any = None
    done: int = 0
    total: int | None = None
    runs: int = 0
    interrupted: int = 0
    control: str = ""
    token: str = ""
    reason: str = ""
    error: str = ""
    parked: str | None = None
    checkpoints: int = 0


@dataclass
class MemoryStore:
    """The same decisions as RedisStore, in this process's memory: for inline runs and the
    `podjobs.iteration.testing` helpers. `request(job_id, "pause"|"cancel")` plays operator."""

    records: dict[str, MemoryRecord] = field(default_factory=dict)

    def record(self, job_id: str) -> MemoryRecord:
        return self.records.setdefault(job_id, MemoryRecord())

    def request(self, job_id: str, control: str) -> None:
        self.record(job_id).control = control

    def start(self, ctx: Context, token: str, payload: str) -> Start:
        r = self.record(ctx.job_id)
        if r.state in ("succeeded", "cancelled"):
            return Start(r.state)
        if r.control == "cancel":
            r.state, r.control = "cancelled", ""
            return Start("cancelled")
        if r.control == "pause":
            r.state, r.control, r.parked = "paused", "", payload
            return Start("paused")
        if r.cursor is None and ctx.payload.get("cursor") is not None:
            r.cursor = ctx.payload["cursor"]
        first = r.runs == 0
        r.state, r.token, r.error = "running", token, ""
        r.runs += 1
        return Start("run", json.loads(dump_cursor(r.cursor)), r.done, first)

    def _save(self, r: MemoryRecord, cursor: Any, delta: int, total: int | None) -> None:
        r.cursor = json.loads(dump_cursor(cursor))
        r.done += delta
        r.checkpoints += 1
        if total is not None:
            r.total = total

    def checkpoint(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None) -> str:
        r = self.record(ctx.job_id)
        if r.token != token:
            return "lost"
        self._save(r, cursor, delta, total)
        return r.control

    def poll(self, ctx: Context, token: str) -> str:
        r = self.record(ctx.job_id)
        return "lost" if r.token != token else r.control

    def interrupt(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None,
                  reason: str) -> str:
        r = self.record(ctx.job_id)
        if r.token != token:
            return "lost"
        self._save(r, cursor, delta, total)
        r.interrupted += 1
        r.reason = reason
        r.state = {"pause": "paused", "cancel": "cancelling"}.get(r.control, "interrupted")
        return r.state

    def park(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None,
             payload: str) -> str:
        r = self.record(ctx.job_id)
        if r.token != token:
            return "lost"
        if r.control != "pause":
            return r.control
        self._save(r, cursor, delta, total)
        r.state, r.control, r.parked = "paused", "", payload
        return "parked"

    def finish(self, ctx: Context, token: str, cursor: Any, delta: int, total: int | None,
               state: str) -> str:
        r = self.record(ctx.job_id)
        if r.token != token:
            return "lost"
        self._save(r, cursor, delta, total)
        r.state, r.control, r.token = state, "", ""
        return "done"

    def error(self, ctx: Context, token: str, cursor: Any, delta: int, message: str,
              keep_cursor: bool) -> str:
        r = self.record(ctx.job_id)
        if r.token != token:
            return "lost"
        if not keep_cursor:
            self._save(r, cursor, delta, None)
        r.state, r.error = "errored", message
        return "errored"
