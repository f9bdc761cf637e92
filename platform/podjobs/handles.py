"""What Python code can do with a job after enqueueing it: look, cancel, find by id.

1. `status(handle)` -> `JobStatus`: a tracked job's status record (`podjobs.status`:
   queued, running, retrying, succeeded, failed, dead, cancelled, with attempts, error,
   result); an untracked job's place in its pod's Redis (queued, scheduled, retrying,
   running, dead), or "unknown" once it is gone (untracked jobs leave nothing when done).
   Records are read through the backend (`StatusStore.status_record`: Redis or SQL).
2. `cancel(handle)` -> bool: a tracked job that has not started is removed from its
   queue, scheduled or retry set (cancel.lua, as `DELETE /v1/jobs/{id}` does): True when it
   is cancelled (now or before), False when it has started or finished. An untracked job
   cannot be cancelled (`PodjobsError` saying how to track it: `job.call(...).tracked()`).
3. `find(job_id)` -> `JobHandle` of a tracked job, looked for on every pod the client
   knows (`JobNotFound` otherwise).
Reads and the cancel go to the pod the handle names (`handle.pod`), else the client's
only backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from podjobs.errors import JobNotFound, PodjobsError

if TYPE_CHECKING:
    from podjobs.backend import StatusStore
    from podjobs.client import JobHandle

#: the place of an untracked job in Redis (ops.FoundJob.where) -> its state
_WHERE_STATE = {"queue": "queued", "scheduled": "scheduled", "retry": "retrying",
                "in_flight": "running", "dead": "dead"}


@dataclass(frozen=True)
class JobStatus:
    """A job's state as `handle.status()` reads it (see the module docstring)."""

    id: str
    state: str
    tracked: bool
    attempts: int | None = None
    reason: str | None = None
    error: dict[str, Any] | None = None
    result: Any = None
    record: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "dead", "cancelled")


def _backend(handle: JobHandle) -> StatusStore:
    from podjobs.backend import StatusStore
    from podjobs.client import get_client

    client = get_client()
    if handle.pod is not None and client.resolver is not None:
        b = client.resolver(None, handle.pod).backend
    else:
        b = client.backend  # type: ignore[assignment]
    if not isinstance(b, StatusStore):
        raise PodjobsError(f"job {handle.id}: its pod's backend keeps no status records; "
                           f"nothing to read")
    return b


def _record(b: StatusStore, job_id: str) -> dict[str, str]:
    return b.status_record(job_id)


def _inspector(b: StatusStore) -> Any:
    """The pod's Inspector (podjobs.ops on Redis, SqlInspector on SQL)."""
    from podjobs.backend import RedisBackend

    if isinstance(b, RedisBackend):
        from podjobs.ops import Inspector

        return Inspector(b)
    from podjobs.sqlbackend.ops import SqlInspector

    return SqlInspector(b)  # type: ignore[arg-type]


def _json(raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def status(handle: JobHandle) -> JobStatus:
    b = _backend(handle)
    rec = _record(b, handle.id)
    if rec:
        return JobStatus(handle.id, rec.get("state", "unknown"), True,
                         int(rec["attempts"]) if rec.get("attempts", "").isdigit() else None,
                         rec.get("reason") or None, _json(rec.get("error")),
                         _json(rec.get("result")), rec)
    try:
        found = _inspector(b).find_job(handle.id)
    except JobNotFound:
        return JobStatus(handle.id, "unknown", False)
    p = found.payload
    return JobStatus(handle.id, _WHERE_STATE.get(found.where, found.where), False,
                     p.get("attempt", 0) if isinstance(p.get("attempt", 0), int) else None,
                     p.get("dead_reason"), p.get("error") if isinstance(p.get("error"), dict)
                     else None)


def cancel(handle: JobHandle) -> bool:
    from podjobs import status as status_mod

    b = _backend(handle)
    rec = _record(b, handle.id)
    if not rec:
        raise PodjobsError(
            f"job {handle.id} has no status record (it is not tracked, or its record expired); "
            f"only tracked jobs can be cancelled: enqueue with job.call(...).tracked().enqueue()")
    payload = _json(rec.get("payload"))
    data = payload if isinstance(payload, dict) else {}
    unique = data.get("unique") if isinstance(data.get("unique"), str) else None
    for _ in range(3):
        outcome, _state = b.cancel(handle.id, rec.get("queue", ""), rec.get("tenant") or None,
                                   unique, status_mod.finished_ttl(data))
        if outcome == "stale":
            rec = _record(b, handle.id)
            continue
        return outcome in ("cancelled", "already")
    return False


def find(job_id: str) -> JobHandle:
    from podjobs.backend import StatusStore
    from podjobs.client import JobHandle, get_client

    client = get_client()
    pods: list[tuple[str | None, Any]]
    router = getattr(client, "router", None)
    if router is not None:
        pods = [(name, router.backend(name)) for name in sorted(router.directory.pods())]
    else:
        pods = [(None, client.backend)]
    for pod, b in pods:
        if not isinstance(b, StatusStore):
            continue
        rec = _record(b, job_id)
        if rec and rec.get("reason") != "moved":
            return JobHandle(job_id, rec.get("job", ""), rec.get("queue", ""),
                             rec.get("pod") or pod, rec.get("tenant") or None)
    raise JobNotFound(f"no tracked job {job_id!r} on {'any pod' if router else 'this backend'} "
                      f"(untracked jobs have no record to find them by)")
