"""Parallel iteration: an integer range or a keyset split into parts that run as jobs at once.

1. `enqueue_parallel` cuts [start, stop) into K near-equal parts (`split_range`), or takes
   keyset slices (`enumerators.keyset_parts`), records the group (its parts' ids and the
   completion callback) in one round trip, then enqueues the K part jobs in another. Each
   part's payload carries {"part": {"group", "index", "cbq", "start", "stop"}} (or "after",
   "until"); the job reads its slice with `IterationJob.part_range` / `part_keys`.
2. Each part checkpoints, stops, pauses and resumes like any iteration job.
3. When a part succeeds, `iter_finish.lua` adds it to the group's done set; the part that
   completes the set enqueues the callback job (once, whatever the duplicates).
4. `group_state` folds the parts' states into the group's (pure, tested from a table).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from podjobs.backend import RedisBackend
from podjobs.errors import ConfigurationError
from podjobs.ids import new_id
from podjobs.iteration import iterkeys
from podjobs.iteration.state import State, split_range
from podjobs.iteration.store import lua_for
from podjobs.jobs import Call, JobDef, JobHandle
from podjobs.payload import encode

if TYPE_CHECKING:
    from podjobs.iteration.job import IterationJob


@dataclass
class ParallelHandle:
    """What `enqueue_parallel` returns: the group id (for `podjobs iterations show`), the
    parts' handles and their bounds ({"start", "stop"} or {"after", "until"})."""

    group: str
    parts: list[JobHandle]
    bounds: list[dict[str, Any]]


def _callback(then: Any) -> Call | None:
    if then is None:
        return None
    if isinstance(then, Call):
        return then
    if isinstance(then, JobDef):
        return then.call()
    if isinstance(then, type) and hasattr(then, "definition"):
        return Call(then.definition)
    raise ConfigurationError(f"then={then!r}: pass a job, a job class or Job.call(args...)")


def enqueue_parallel(job: type[IterationJob], parts: int | Sequence[dict[str, Any]],
                     args: Sequence[Any], kwargs: dict[str, Any], *,
                     span: tuple[int, int] | None = None, then: Any = None,
                     tenant: str | None = None, pod: str | None = None) -> ParallelHandle:
    from podjobs.client import get_client

    jd = job.definition
    if isinstance(parts, int):
        if span is None:
            raise ConfigurationError(
                f"enqueue_parallel({parts}, ...) needs span=(start, stop), or a list of keyset "
                f"slices from enumerators.keyset_parts(...) instead of a number")
        bounds: list[dict[str, Any]] = [{"start": lo, "stop": hi} for lo, hi in
                                        split_range(int(span[0]), int(span[1]), parts)]
    else:
        bounds = [dict(b) for b in parts]
        if not bounds:
            raise ConfigurationError("enqueue_parallel got an empty list of parts")
    client = get_client()
    target = client._target(tenant, pod)
    backend = target.backend
    if not isinstance(backend, RedisBackend):
        from podjobs.errors import NotSupported

        raise NotSupported(
            f"a parallel iteration (enqueue_parallel of {jd.name!r}) is not supported on the SQL "
            f"backend yet; enqueue it as one iteration job, or run it on a Redis pod")
    if target.hold:
        raise ConfigurationError(
            f"tenant {tenant!r} is being moved; enqueue the parallel iteration after the move "
            f"('podjobs tenants move --status {tenant}')")
    now_ms = time.time_ns() // 1_000_000
    gid = new_id(now_ms)
    cb = _callback(then)
    cb_text, cbq = "", ""
    if cb is not None:
        cb_text = encode(cb.payload(now_ms, tenant, target.pod), client.max_payload_bytes)
        cbq = cb.job.options.queue
    call = Call(jd, tuple(args), dict(kwargs))
    texts, handles = [], []
    for i, b in enumerate(bounds):
        p = call.payload(now_ms, tenant, target.pod)
        p["part"] = {"group": gid, "index": i, "cbq": cbq, **b}
        texts.append(encode(p, client.max_payload_bytes))
        handles.append(JobHandle(p["id"], jd.name, jd.options.queue, target.pod, tenant))
    lua = lua_for(backend)
    lua.run("iter_group", "record a parallel iteration",
            [iterkeys.group(gid), iterkeys.GROUPS, iterkeys.INDEX, *(iterkeys.job(h.id) for h in handles)],
            [gid, jd.name, jd.options.queue, tenant or "", cb_text, cbq, *(h.id for h in handles)])
    backend.enqueue(jd.options.queue, texts)
    return ParallelHandle(gid, handles, bounds)


#: the group's state is the first of these that any part is in
_PRECEDENCE = (State.CANCELLING, State.RUNNING, State.ERRORED, State.PAUSED, State.INTERRUPTED,
               State.ENQUEUED)


def group_state(states: Sequence[State]) -> State:
    """The state of a group of parts: succeeded when all succeeded; cancelled when all are
    finished and one was cancelled; otherwise the most telling state of an unfinished part."""
    if not states or all(s is State.SUCCEEDED for s in states):
        return State.SUCCEEDED
    if all(s in (State.SUCCEEDED, State.CANCELLED) for s in states):
        return State.CANCELLED
    for s in _PRECEDENCE:
        if s in states:
            return s
    return State.ENQUEUED
