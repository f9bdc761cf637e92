"""Per-job status records: what a status monitor (the HTTP API's `GET /v1/jobs/{id}`) reads.

Only *tracked* jobs have one: a payload with a `"track"` member (its value is the number of
seconds the record is kept once the job has finished). The HTTP API tracks every job it
enqueues; Python enqueues are untracked unless they ask (`Call(..., track=seconds)`), so
the core's hot paths (enqueue, reserve, batched acks) do not change for them.

1. The record is a hash `pj:status:{id}` in the Redis of the pod the job was enqueued on;
   each transition is written by the Lua script that makes the transition itself (one round
   trip, atomic with it): enqueue/hold (queued), retry (retrying), dead (failed or dead),
   reenqueue (queued again: an iteration job resuming, a throttled job), dead_retry (queued
   again by an operator), cancel (cancelled), ack_one (succeeded, with follow-ups or a
   unique key; or an unfinished delivery: an iteration job paused or cancelled), recover (a
   gone worker's jobs queued again), iter_resume (a paused iteration job queued again).
   The start (running) and a plain success (succeeded) are batched by the worker's acker
   like untracked acks (ack_status: starts first, then acks).
2. The builders here make the `StatusWrite` (key, fields as JSON, TTL) each script takes;
   they are pure.
3. `Created(location)`: what a job returns to declare the resource it created; a dict with a
   string "location" works the same (so does a process-isolated job's result).

Record fields (all strings): state, job, queue, tenant, pod, attempts, max_attempts,
enqueued_ms, run_at_ms (when a queued or retrying job is due), started_ms (first start),
updated_ms, finished_ms (Redis clock), worker (while running), reason (why it died or was
put back), error (JSON {"class", "message"}), location and result (JSON) of a succeeded
job, and payload (the job as stored while it waits in a queue or set, so `cancel` can remove
exactly it; dropped when the job starts).

States:

    queued ──start──▶ running ──ok──▶ succeeded
    running ──error, retries left──▶ retrying ──start──▶ running
    running ──error, no retries left──▶ failed        (the job's own code failed)
    queued | running ──refused (unknown job, arguments, unknown tenant, ...)──▶ dead
    running ──put back (iteration resume, throttle)──▶ queued
    queued ──forwarded to the tenant's pod──▶ queued there (reason forwarded); here: reason moved
    running ──iteration job paused (parked)──▶ queued (reason paused) ──resume──▶ queued
    running ──iteration job cancelled──▶ cancelled
    queued | retrying ──cancel──▶ cancelled
    failed | dead ──operator retries it from the dead set──▶ queued
"""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from typing import Any

from podjobs import keys
from podjobs.payload import dumps
from podjobs.record import Record

log = logging.getLogger("podjobs.status")

#: seconds a record of an unfinished job is kept after its last change (30 days; a job due
#: later than that keeps its record until it is due, plus this)
PENDING_TTL_S = 30 * 24 * 3600
#: seconds a finished job's record is kept when the payload does not say (1 day)
DEFAULT_FINISHED_TTL_S = 24 * 3600
#: largest result (JSON) kept in a record; a bigger one is left out
MAX_RESULT_BYTES = 16 * 1024
#: longest location a job may declare
MAX_LOCATION = 2048
#: dead reasons where the job ran and its own code failed (else: the platform refused it)
FAILED_REASONS = frozenset({"retries_exhausted", "at_most_once_failed"})


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


class Created:
    """Return this from a job to declare the resource it created:

        @podjobs.job
        def resize(ctx, image_id):
            ...
            return podjobs.Created(f"/v1/images/{image_id}/large")

    The status monitor of a tracked job then answers 303 See Other to `location` (a path
    or an absolute URL). Returning `{"location": "...", ...}` does the same and keeps the
    other members as the job's result."""

    __slots__ = ("location",)
    location: str

    def __init__(self, location: str) -> None:
        if not valid_location(location):
            raise ValueError(
                f"Created location {location!r} must be a non-empty str of at most "
                f"{MAX_LOCATION} characters without control characters or spaces")
        object.__setattr__(self, "location", location)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Created is immutable: cannot set {name!r}")

    def __eq__(self, other: object) -> bool:
        return self.location == other.location if type(other) is Created else NotImplemented

    def __hash__(self) -> int:
        return hash((Created, self.location))

    def __repr__(self) -> str:
        return f"Created(location={self.location!r})"


def valid_location(value: object) -> bool:
    """A str usable as a Location header: non-empty, bounded, no control characters or
    spaces (so it can never split a header)."""
    return (isinstance(value, str) and 0 < len(value) <= MAX_LOCATION
            and all(32 < ord(c) < 127 or ord(c) > 159 for c in value))


def as_json_result(result: Any) -> Any:
    """A job's result as a JSON-able value (a `Created` becomes {"location": ...})."""
    if isinstance(result, Created):
        return {"location": result.location}
    return result


class StatusWrite(Record):
    """One status transition, for the Lua script that makes it: the record's key, the
    fields to set (a JSON object of strings) and the record's TTL in seconds. `if_worker`:
    written only while the record says running on that worker (ack_one.lua)."""

    __slots__ = ("key", "fields", "ttl_s", "if_worker")

    def __init__(self, key: str, fields: str, ttl_s: int, if_worker: str = "") -> None:
        self.key = key
        self.fields = fields
        self.ttl_s = ttl_s
        self.if_worker = if_worker


def finished_ttl(data: dict[str, Any]) -> int:
    """Seconds a finished job's record is kept: the payload's `track` value."""
    try:
        ttl = int(data.get("track") or 0)
    except (TypeError, ValueError):
        ttl = 0
    return ttl if ttl > 0 else DEFAULT_FINISHED_TTL_S


def _write(job_id: str, fields: dict[str, str], ttl_s: int) -> StatusWrite:
    return StatusWrite(keys.status(job_id), dumps(fields), int(ttl_s))


def _identity(data: dict[str, Any]) -> dict[str, str]:
    """The fields every write repeats, so a record made on another pod (a forwarded or
    moved job) is complete whichever write creates it."""
    f = {"job": str(data.get("job") or ""), "queue": str(data.get("queue") or ""),
         "tenant": str(data.get("tenant") or ""), "enqueued_ms": str(int(data.get("enqueued_at") or 0))}
    if data.get("pod"):
        f["pod"] = str(data["pod"])
    return f


def enqueued(data: dict[str, Any], max_attempts: int) -> StatusWrite:
    """Queued (the enqueue script adds payload, run_at_ms and the Redis-clock enqueued_ms)."""
    f = _identity(data)
    f.update(state=JobState.QUEUED.value, attempts="0", max_attempts=str(max_attempts))
    return _write(data["id"], f, PENDING_TTL_S)


def started(data: dict[str, Any], worker_id: str, attempt: int) -> StatusWrite:
    f = _identity(data)
    f.update(state=JobState.RUNNING.value, worker=worker_id, attempts=str(attempt))
    return _write(data["id"], f, PENDING_TTL_S)


def succeeded(data: dict[str, Any], result: Any) -> StatusWrite:
    f = {"state": JobState.SUCCEEDED.value, "reason": "", "error": ""}
    f.update(result_fields(result))
    return _write(data["id"], f, finished_ttl(data))


def retrying(data: dict[str, Any], attempt: int, error: dict[str, str]) -> StatusWrite:
    """Retrying (the retry script adds run_at_ms and the payload of the next attempt)."""
    f = {"state": JobState.RETRYING.value, "attempts": str(attempt),
         "error": _error_json(error), "reason": "error"}
    return _write(data["id"], f, PENDING_TTL_S)


def ended(data: dict[str, Any], reason: str, error: dict[str, str], attempt: int) -> StatusWrite:
    """Failed (the job's code failed for the last time) or dead (refused by the platform)."""
    state = JobState.FAILED if reason in FAILED_REASONS else JobState.DEAD
    f = _identity(data)
    f.update(state=state.value, reason=reason, error=_error_json(error), attempts=str(attempt))
    return _write(data["id"], f, finished_ttl(data))


def unfinished(data: dict[str, Any], state: str, worker_id: str) -> StatusWrite | None:
    """A delivery that ended without the job finishing in it (`podjobs.invoke.Unfinished`),
    written only while the record still says running on this worker (so a resume, or a
    run that took over, written since, stands):

    - paused: queued (reason paused) until a resume puts the parked job back on its queue
      (iter_resume.lua then writes its payload); kept like an unfinished job's record;
    - cancelled: cancelled (the iteration job was cancelled);
    - superseded, duplicate: nothing (the run that took over, or the one that finished,
      writes the record)."""
    if state == "paused":
        f = {"state": JobState.QUEUED.value, "reason": "paused", "finished_ms": ""}
        return StatusWrite(keys.status(data["id"]), dumps(f), PENDING_TTL_S, worker_id)
    if state == "cancelled":
        f = {"state": JobState.CANCELLED.value, "reason": "cancelled", "location": "", "result": ""}
        return StatusWrite(keys.status(data["id"]), dumps(f), finished_ttl(data), worker_id)
    return None


def forwarded(data: dict[str, Any], max_attempts: int) -> StatusWrite:
    """The record on the pod a job was forwarded (or sent to be held) to, written with it:
    queued (the enqueue or hold script adds payload and run_at_ms)."""
    f = _identity(data)
    f.update(state=JobState.QUEUED.value, attempts=str(int(data.get("attempt") or 0)),
             max_attempts=str(max_attempts), reason="forwarded", finished_ms="")
    return _write(data["id"], f, PENDING_TTL_S)


#: reason of a record left on a pod the job went away from (its live record is on `pod`)
MOVED = "moved"


def moved_away(data: dict[str, Any], pod: str) -> StatusWrite:
    """The record left on the pod a job was forwarded from: it names the pod the job went to
    (`pod`, reason moved) and is kept like a finished job's; a status monitor prefers the
    record on that pod."""
    f = _identity(data)
    f.update(state=JobState.QUEUED.value, reason=MOVED, pod=pod, finished_ms="")
    return _write(data["id"], f, finished_ttl(data))


def requeued(data: dict[str, Any], reason: str) -> StatusWrite:
    """Put back without a failure (the reenqueue script adds payload and run_at_ms)."""
    return _write(data["id"], {"state": JobState.QUEUED.value, "reason": reason}, PENDING_TTL_S)


def revived(data: dict[str, Any]) -> StatusWrite:
    """An operator put a dead job back on its queue with a fresh attempt count."""
    f = _identity(data)
    f.update(state=JobState.QUEUED.value, attempts="0", reason="", error="", finished_ms="")
    return _write(data["id"], f, PENDING_TTL_S)


def _error_json(error: dict[str, str]) -> str:
    return dumps({"class": str(error.get("class", "")), "message": str(error.get("message", ""))[:2000]})


def result_fields(result: Any) -> dict[str, str]:
    """`location` (when the result declares one) and `result` (JSON, when small enough)."""
    out: dict[str, str] = {"location": "", "result": ""}
    value = as_json_result(result)
    if isinstance(value, dict):
        loc = value.get("location")
        if loc is not None:
            if valid_location(loc):
                out["location"] = loc
            else:
                log.warning("job result declares an unusable location %r; ignored", loc)
    if value is None:
        return out
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError):
        return out  # not JSON: the result is not kept
    if len(text) <= MAX_RESULT_BYTES:
        out["result"] = text
    return out

