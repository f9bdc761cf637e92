"""Iteration states, the progress view, and the pure decisions of the run loop.

1. `State`: the state of one iteration job (its state machine below).
2. `Progress`: one job's progress as stored in Redis (items done, total, rate,
   ETA, cursor, interruptions, total run time), built from its hash.
3. Pure decisions, tested from tables: `checkpoint_due` (is a checkpoint due
   at this item boundary) and `split_range` (parts of a parallel range).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class State(str, Enum):
    """The state of an iteration job.

        enqueued ──start──▶ running ──enumerator exhausted──▶ succeeded
        running ──shutdown | max runtime | throttle──▶ interrupted ──start──▶ running
        running ──an item raised (retried with backoff)──▶ errored ──retry starts──▶ running
        running ──pause requested, next item boundary──▶ paused (payload parked, cursor kept)
        running ──cancel requested──▶ cancelling ──next item boundary──▶ cancelled
        enqueued | interrupted | errored ──pause──▶ paused (parked when a worker takes it)
        paused ──resume──▶ enqueued (parked payload back on its queue) or its state before
        enqueued | interrupted | errored | paused ──cancel──▶ cancelled (a queued copy is dropped
                                                              when a worker takes it)

    `succeeded` and `cancelled` are final: a duplicate delivery of the job does nothing.
    Resuming (interrupted → running) is not retrying: the attempt count does not grow.
    """

    ENQUEUED = "enqueued"
    RUNNING = "running"
    PAUSED = "paused"
    INTERRUPTED = "interrupted"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    SUCCEEDED = "succeeded"
    ERRORED = "errored"


FINAL = (State.SUCCEEDED, State.CANCELLED)


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


@dataclass
class Progress:
    """One iteration job's progress; times in ms on Redis' clock, durations in seconds."""

    id: str
    job: str
    state: State
    queue: str
    tenant: str | None
    #: items processed up to the last checkpoint (all runs)
    done: int
    #: items the enumerator said it has, when it knows
    total: int | None
    cursor: Any
    runs: int
    interrupted: int
    #: seconds spent running, all runs together (up to the last checkpoint for a running job,
    #: plus the time since)
    elapsed_s: float
    created_ms: int
    started_ms: int | None
    updated_ms: int | None
    finished_ms: int | None
    #: "pause" or "cancel" while a request waits for the next item boundary
    control: str
    #: why the last run stopped (shutdown, max_runtime, throttled, ...)
    reason: str
    error: str
    worker: str
    group: str
    part: int | None

    @property
    def rate(self) -> float | None:
        """Items per second over the time spent running."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else None

    @property
    def eta_s(self) -> float | None:
        """Seconds of running left at the current rate, when the total is known."""
        rate = self.rate
        if self.total is None or not rate:
            return None
        return max(0.0, (self.total - self.done) / rate)

    @property
    def percent(self) -> float | None:
        if not self.total:
            return None
        return min(100.0, 100.0 * self.done / self.total)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        d["rate"] = self.rate
        d["eta_s"] = self.eta_s
        d["percent"] = self.percent
        return d

    @classmethod
    def from_hash(cls, job_id: str, h: dict[str, str], now_ms: int) -> Progress:
        import json

        state = State(h.get("state", "enqueued"))
        elapsed_ms = _int(h.get("elapsed_ms"))
        if state is State.RUNNING and h.get("tick_ms"):
            elapsed_ms += max(0, now_ms - _int(h["tick_ms"]))
        cursor: Any = None
        if h.get("cursor"):
            try:
                cursor = json.loads(h["cursor"])
            except ValueError:
                cursor = h["cursor"]
        return cls(
            id=job_id, job=h.get("job", ""), state=state, queue=h.get("queue", ""),
            tenant=h.get("tenant") or None, done=_int(h.get("done")),
            total=_int(h["total"]) if h.get("total") else None, cursor=cursor,
            runs=_int(h.get("runs")), interrupted=_int(h.get("interrupted")),
            elapsed_s=elapsed_ms / 1000, created_ms=_int(h.get("created_ms")),
            started_ms=_int(h["started_ms"]) if h.get("started_ms") else None,
            updated_ms=_int(h["updated_ms"]) if h.get("updated_ms") else None,
            finished_ms=_int(h["finished_ms"]) if h.get("finished_ms") else None,
            control=h.get("control", ""), reason=h.get("reason", ""), error=h.get("error", ""),
            worker=h.get("worker", ""), group=h.get("group", ""),
            part=_int(h["part"]) if h.get("part") else None,
        )


def checkpoint_due(pending: int, since_s: float, every: int | None, interval: float | None) -> bool:
    """A checkpoint is due after `every` items (or batches) or `interval` seconds since the
    last one, whichever comes first; with neither set, only when the run stops."""
    if pending <= 0:
        return False
    if every and pending >= every:
        return True
    return bool(interval is not None and since_s >= interval)


def split_range(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) cut into at most `parts` contiguous, non-empty, near-equal pieces."""
    if parts < 1:
        raise ValueError(f"parts={parts} must be >= 1")
    n = max(0, stop - start)
    parts = min(parts, n) or 1
    size, extra = divmod(n, parts)
    out = []
    lo = start
    for i in range(parts):
        hi = lo + size + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out
