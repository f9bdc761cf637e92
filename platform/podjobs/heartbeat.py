"""Heartbeats and the reaper.

1. Every `ttl/3` the worker refreshes its heartbeat key (TTL on Redis' clock)
   and its info hash (host, pid, queues, concurrency, busy jobs).
2. After each beat it looks for registered workers whose heartbeat key is gone
   and gives their in-flight jobs back to the queues (recover.lua re-checks
   atomically, so two reapers never double a job).
3. A beat that finds this worker reaped sets `reaped`; the fetcher then drops
   its buffer and registers again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from podjobs.backend import RedisBackend

log = logging.getLogger("podjobs.heartbeat")


class Heartbeat:
    def __init__(self, backend: RedisBackend, worker_id: str, ttl_s: float,
                 info: Callable[[], dict[str, str]]) -> None:
        self.backend = backend
        self.worker_id = worker_id
        self.ttl_ms = max(300, int(ttl_s * 1000))
        self.interval = ttl_s / 3
        self.info = info
        self.reaped = False
        #: time.monotonic() of the last beat Redis confirmed
        self.last_ok = time.monotonic()
        self.ttl_s = ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="podjobs-heartbeat", daemon=True)

    def register(self) -> None:
        self.backend.heartbeat(self.worker_id, self.ttl_ms, True, self.info())
        self.reaped = False
        self.last_ok = time.monotonic()

    def stale(self) -> bool:
        """True when no beat was confirmed within the TTL: the worker may have been reaped."""
        return time.monotonic() - self.last_ok > self.ttl_s * 0.9

    def beat(self) -> bool:
        ok = self.backend.heartbeat(self.worker_id, self.ttl_ms, False, self.info())
        if ok:
            self.last_ok = time.monotonic()
        if not ok and not self.reaped:
            log.warning("worker %s: heartbeat found it reaped", self.worker_id)
            self.reaped = True
        return ok

    def reap(self) -> int:
        """Recover the jobs of every worker whose heartbeat is gone; returns jobs given back."""
        total = 0
        for wid, queues in self.backend.dead_worker_ids():
            n = self.backend.recover(wid, queues)
            if n >= 0:
                log.warning("worker %s is gone: gave %d in-flight jobs back to %s", wid, n, queues)
                total += n
        return total

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
                self.reap()
            except Exception as exc:  # never let the heartbeat thread die
                log.warning("heartbeat failed (%s: %s)", type(exc).__name__, exc)


def busy_json(running: dict[int, tuple[str, str, str, float]]) -> str:
    """The jobs a worker is running, for `podjobs workers`."""
    now = time.time()
    return json.dumps([{"id": jid, "job": name, "queue": q, "running_s": round(now - t, 3)}
                       for jid, name, q, t in list(running.values())])
