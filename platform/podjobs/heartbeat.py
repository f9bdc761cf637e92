"""Heartbeats and the reaper.

1. Every `ttl/3` the worker refreshes its heartbeat key (TTL on Redis' clock)
   and its info hash (host, pid, queues, concurrency, busy jobs).
2. After each beat it looks for registered workers whose heartbeat key is gone
   and gives their in-flight jobs back to the queues (recover.lua re-checks
   atomically, so two reapers never double a job).
3. A beat that finds this worker reaped (it was paused past its TTL) renews the
   worker's identity (podjobs.identity: a new generation) and registers that; the jobs
   reserved under the old id are never started (the executor threads check the owner).
4. `stale()` says whether the last beat Redis confirmed is too old to vouch for the
   worker: it is timed from when that beat was *sent*, so a reply that arrives late
   (after a pause) never makes the worker look fresh. `confirm()` asks Redis then; an
   error talking to Redis is not a reap: it waits and asks again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from podjobs.backend import Backend
from podjobs.identity import Identity

log = logging.getLogger("podjobs.heartbeat")


class Heartbeat:
    def __init__(self, backend: Backend, identity: Identity, ttl_s: float,
                 info: Callable[[], dict[str, str]]) -> None:
        self.backend = backend
        self.identity = identity
        self.ttl_ms = max(300, int(ttl_s * 1000))
        self.interval = ttl_s / 3
        self.info = info
        #: time.monotonic() when the last beat Redis confirmed was sent
        self.last_ok = time.monotonic()
        self.ttl_s = ttl_s
        self._stop = threading.Event()
        self._confirm_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="podjobs-heartbeat", daemon=True)

    @property
    def worker_id(self) -> str:
        return self.identity.id

    def register(self, worker_id: str | None = None) -> None:
        """Register this worker (or the next generation's id, see Identity.renew)."""
        sent = time.monotonic()
        self.backend.heartbeat(worker_id or self.identity.id, self.ttl_ms, True, self.info())
        self.last_ok = sent

    def stale(self) -> bool:
        """True when no beat sent within 0.9 TTL was confirmed: the worker may have been reaped."""
        return time.monotonic() - self.last_ok > self.ttl_s * 0.9

    def beat(self) -> bool:
        """Beat; False when this worker's id had been reaped (it is then renewed and the new
        one registered)."""
        wid = self.identity.id
        sent = time.monotonic()
        ok = self.backend.heartbeat(wid, self.ttl_ms, False, self.info())
        if ok:
            self.last_ok = max(self.last_ok, sent)
        else:
            self.on_reaped(wid)
        return ok

    def on_reaped(self, seen: str) -> None:
        """Redis refused id `seen` (reaped): move to the next generation and register it."""
        self.identity.renew(seen, self.register)

    def confirm(self, stopping: threading.Event) -> bool:
        """After a pause: make sure this worker was not reaped meanwhile (one beat, shared by
        the threads asking at once). Redis errors are not a reap: ask again with backoff until
        Redis answers or `stopping` is set (False then: the caller gives its job back)."""
        delay = 0.1
        while not stopping.is_set():
            with self._confirm_lock:
                if not self.stale():
                    return True
                try:
                    self.beat()
                    return True  # beat renewed the identity if it was reaped: callers check the owner
                except Exception as exc:
                    log.warning("worker %s cannot tell whether it was reaped (%s: %s); asking "
                                "again in %.1f s before starting more jobs", self.identity.id,
                                type(exc).__name__, exc, delay)
            stopping.wait(delay)
            delay = min(5.0, delay * 2)
        return False

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
