"""The audit log of the HTTP API (`podjobs api --audit-log FILE`): one JSON line for every
state-changing request (POST, PUT, PATCH, DELETE: enqueue, cancel, the dashboard's
actions), written after it was answered: ts (ISO 8601 UTC), token (its name), tenant,
operator, method, path, action, job (the job id, when there is one) and status (the answer).
Requests without a valid token are logged too (token null). Lines are appended under a lock
and flushed one by one, so a crash loses at most the line being written.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

_ACTIONS = {("POST", "jobs"): "enqueue", ("DELETE", "job"): "cancel"}


def action_of(method: str, path: str) -> tuple[str, str | None]:
    """(what the request does, the job id it names) from its method and path."""
    parts = [p for p in path.split("/") if p]
    if len(parts) == 4 and parts[:2] == ["v1", "tenants"] and parts[3] == "jobs":
        return _ACTIONS.get((method, "jobs"), method.lower()), None
    if len(parts) == 3 and parts[:2] == ["v1", "jobs"]:
        return _ACTIONS.get((method, "job"), method.lower()), parts[2]
    return f"{method.lower()} {'/'.join(parts)}", None


class AuditLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open

    def record(self, *, principal: Any, method: str, path: str, status: int,
               job: str | None = None) -> None:
        action, job_in_path = action_of(method, path)
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
            "token": getattr(principal, "name", None), "tenant": getattr(principal, "tenant", None),
            "operator": bool(getattr(principal, "operator", False)), "method": method,
            "path": path, "action": action, "job": job or job_in_path, "status": status}
        text = json.dumps(line, ensure_ascii=False) + "\n"
        with self._lock:
            self._f.write(text)
            self._f.flush()

    def close(self) -> None:
        with self._lock:
            self._f.close()
