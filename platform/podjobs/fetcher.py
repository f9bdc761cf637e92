"""The fetcher: keeps a worker's local inbox filled from Redis.

1. Waits until the worker has room (running + buffered below its limit).
2. Reserves up to that many jobs in one call, in strict priority order of the
   worker's queue list; each lands in the worker's in-flight hash atomically.
3. When nothing is ready it blocks on the queues' wake lists (BLPOP) instead of
   polling, so an idle worker starts a new job within a round trip or two.
4. When Redis says the worker was reaped (a long pause), it drops its local
   buffer (those jobs went back to the queues) and registers afresh.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
from collections.abc import Callable, Sequence

from podjobs.backend import Backend

log = logging.getLogger("podjobs.fetcher")

#: an inbox item: (queue name, raw payload); None tells an executor thread to stop
Item = tuple[str, bytes] | None


class Fetcher:
    def __init__(self, backend: Backend, worker_id: str, queues: Sequence[str], *,
                 capacity: int, batch: int, idle_wait_s: float,
                 reregister: Callable[[], None]) -> None:
        self.backend = backend
        self.worker_id = worker_id
        self.queues = list(queues)
        #: most jobs held at once (running + waiting in the inbox)
        self.capacity = capacity
        self.batch = batch
        self.idle_wait_s = idle_wait_s
        self.reregister = reregister
        self.inbox: queue_mod.SimpleQueue[Item] = queue_mod.SimpleQueue()
        self._lock = threading.Lock()
        self.outstanding = 0
        self._space = threading.Event()
        self.running = True
        self._thread = threading.Thread(target=self._loop, name="podjobs-fetcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def done_one(self) -> None:
        """An executor finished (or dropped) one job."""
        with self._lock:
            self.outstanding -= 1
            if self.outstanding < self.capacity:
                self._space.set()

    def stop(self) -> None:
        self.running = False
        self._space.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def on_reaped(self) -> None:
        """This worker was reaped: its reserved jobs went back to the queues. Drop the
        local copies (they must not run here) and register afresh."""
        dropped = self.drain_inbox()
        log.warning("worker %s was reaped (paused past its heartbeat timeout); dropped %d "
                    "buffered jobs that went back to the queues; registering again",
                    self.worker_id, len(dropped))
        self.reregister()

    def drain_inbox(self) -> list[tuple[str, bytes]]:
        """Take every unstarted job out of the inbox (leaves stop markers out)."""
        items = []
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue_mod.Empty:
                break
            if item is not None:
                items.append(item)
                self.done_one()
        return items

    def _loop(self) -> None:
        failures = 0
        while self.running:
            with self._lock:
                room = self.capacity - self.outstanding
                if room <= 0:
                    self._space.clear()
            if room <= 0:
                self._space.wait(1.0)
                continue
            try:
                got = self.backend.reserve(self.worker_id, self.queues, min(room, self.batch))
                if got is None:
                    self.on_reaped()
                    continue
                failures = 0
            except Exception as exc:  # any Redis error (BUSY, READONLY, ...): back off, never die
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                log.warning("reserve failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                threading.Event().wait(delay)
                continue
            if not got:
                if not self.running:
                    break
                try:
                    self.backend.wait_for_work(self.queues, self.idle_wait_s)
                except Exception as exc:
                    log.warning("waiting for work failed: %s", exc)
                    threading.Event().wait(0.5)
                continue
            with self._lock:
                self.outstanding += len(got)
            put = self.inbox.put
            for item in got:
                put(item)
