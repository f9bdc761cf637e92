"""The status document of a job, as the monitor `GET /v1/jobs/{id}` shows it (pure).

`job_view(...)`: a status record (and an iteration job's progress) as the JSON document;
`queued_view(...)`: the document of a job just enqueued; `monitor_path(id)`: where its
monitor is; `valid_job_id`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from podjobs.ids import ID_LENGTH

#: the states a monitor shows (the record's states, plus `paused` for an iteration job)
STATES = ("queued", "running", "retrying", "succeeded", "failed", "dead", "cancelled", "paused")
FINAL_STATES = frozenset({"succeeded", "failed", "dead", "cancelled"})
_ID_RE = re.compile(rf"[0-9A-HJKMNP-TV-Z]{{{ID_LENGTH}}}")


def monitor_path(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def valid_job_id(job_id: str) -> bool:
    """A podjobs job id (26 characters of Crockford base32, upper case)."""
    return bool(_ID_RE.fullmatch(job_id))


def iso(ms: str | int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds; None for nothing."""
    try:
        v = int(ms) if ms is not None and ms != "" else 0
    except (TypeError, ValueError):
        return None
    if v <= 0:
        return None
    return datetime.fromtimestamp(v / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int(v: str | None, default: int | None = 0) -> int | None:
    try:
        return int(v) if v is not None and v != "" else default
    except (TypeError, ValueError):
        return default


def _json(v: str | None) -> Any:
    if not v:
        return None
    try:
        return json.loads(v)
    except ValueError:
        return v


def job_view(job_id: str, rec: Mapping[str, str], progress: Mapping[str, Any] | None = None,
             worker_alive: bool | None = None) -> dict[str, Any]:
    """The monitor's JSON document for a status record.

    `progress`: an iteration job's progress (its `pj:iter` hash as `Progress.as_dict()`);
    `worker_alive`: False when the record says running but its worker's heartbeat is gone
    (the job went back to its queue, or will once the worker is reaped: shown as queued)."""
    state = rec.get("state") or "queued"
    reason = rec.get("reason") or None
    if state == "running" and worker_alive is False:
        state, reason = "queued", "recovered"
    if progress is not None:
        it = str(progress.get("state", ""))
        if it == "cancelled" and state not in ("failed", "dead"):
            state, reason = "cancelled", "cancelled"
        elif it == "paused" and state in ("queued", "succeeded", "running"):
            state, reason = "paused", "paused"
    err = _json(rec.get("error"))
    view: dict[str, Any] = {
        "id": job_id,
        "job": rec.get("job", ""),
        "tenant": rec.get("tenant") or None,
        "queue": rec.get("queue", ""),
        "state": state,
        "attempts": _int(rec.get("attempts")),
        "max_attempts": _int(rec.get("max_attempts"), None),
        "enqueued_at": iso(rec.get("enqueued_ms")),
        "run_at": iso(rec.get("run_at_ms")) if state in ("queued", "retrying") else None,
        "started_at": iso(rec.get("started_ms")),
        "finished_at": iso(rec.get("finished_ms")) if state in FINAL_STATES else None,
        "updated_at": iso(rec.get("updated_ms")),
        "reason": reason,
        "error": err if isinstance(err, dict) else None,
        "location": (rec.get("location") or None) if state == "succeeded" else None,
        "result": _json(rec.get("result")) if state == "succeeded" else None,
        "progress": progress_view(progress) if progress is not None else None,
        "monitor": monitor_path(job_id),
    }
    return view


_PROGRESS_KEYS = ("state", "done", "total", "percent", "rate", "eta_s", "runs", "interrupted",
                  "elapsed_s", "reason", "cursor")


def progress_view(p: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: p.get(k) for k in _PROGRESS_KEYS}
    for k in ("rate", "eta_s", "percent", "elapsed_s"):
        v = out.get(k)
        if isinstance(v, float):
            out[k] = round(v, 3) if math.isfinite(v) else None
    return out


def queued_view(job_id: str, job: str, tenant: str, queue: str, max_attempts: int,
                now_ms: int, run_at_ms: int | None) -> dict[str, Any]:
    """The document of a job just enqueued (built without reading it back)."""
    rec = {"state": "queued", "job": job, "tenant": tenant, "queue": queue, "attempts": "0",
           "max_attempts": str(max_attempts), "enqueued_ms": str(now_ms),
           "run_at_ms": str(run_at_ms or now_ms), "updated_ms": str(now_ms)}
    return job_view(job_id, rec)
