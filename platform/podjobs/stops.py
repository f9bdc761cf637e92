"""Stop signals for running jobs: `ctx.stopping`, one event per running job.

1. The executor registers each job before it runs (with its tenant and a
   callback that reaches the job: an event in thread mode, a signal to the
   child process in process mode) and unregisters it afterwards.
2. `stop_all()` (graceful shutdown) sets every running job's event, and every
   job registered afterwards starts with it set.
3. `stop_tenant(t)` (the tenant is moving away) stops only that tenant's jobs:
   a long job checkpoints and puts itself back, so the move need not wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class StopSignals:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, tuple[str | None, threading.Event, Callable[[], None] | None]] = {}
        self.all_stopped = False

    def register(self, job_id: str, tenant: str | None,
                 extra: Callable[[], None] | None = None) -> threading.Event:
        ev = threading.Event()
        with self._lock:
            self._running[job_id] = (tenant, ev, extra)
            if self.all_stopped:
                ev.set()
        return ev

    def unregister(self, job_id: str) -> None:
        with self._lock:
            self._running.pop(job_id, None)

    def _fire(self, items: list[tuple[str | None, threading.Event, Callable[[], None] | None]]) -> int:
        for _, ev, extra in items:
            ev.set()
            if extra is not None:
                extra()
        return len(items)

    def stop_all(self) -> int:
        with self._lock:
            self.all_stopped = True
            items = list(self._running.values())
        return self._fire(items)

    def stop_tenant(self, tenant: str) -> int:
        with self._lock:
            items = [v for v in self._running.values() if v[0] == tenant]
        return self._fire(items)
