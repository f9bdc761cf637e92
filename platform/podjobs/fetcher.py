"""The fetcher: keeps a worker's local inbox filled from Redis.

1. Waits until the worker has room (running + buffered below its limit).
2. Reserves up to that many jobs in one call, in strict priority order of the
   worker's queue list; each lands in the worker's in-flight hash atomically.
3. When nothing is ready it blocks on the queues' wake lists (BLPOP) instead of
   polling, so an idle worker starts a new job within a round trip or two.
4. When Redis says the worker was reaped (a long pause), the worker's identity is
   renewed (podjobs.identity); each reserved job carries the id it was reserved under
   (`Reserved.owner`), so the executors never start one of an earlier generation.
5. A reserve whose reply is lost (dropped connection, timeout) is asked again with the same
   request id until Redis answers: Redis replays that reservation (reserve.lua), so the
   jobs it took are never stranded in this live worker's in-flight hash.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

from podjobs.backend import Backend
from podjobs.identity import Identity
from podjobs.ids import new_id

log = logging.getLogger("podjobs.fetcher")


class Reserved(NamedTuple):
    """A job this worker reserved: its queue, its payload as Redis holds it, and the worker
    id (generation) whose in-flight hash holds it."""

    queue: str
    raw: bytes
    owner: str


#: an inbox item; None tells an executor thread to stop
Item = Reserved | None


class Fetcher:
    def __init__(self, backend: Backend, identity: Identity, queues: Sequence[str], *,
                 capacity: int, batch: int, idle_wait_s: float,
                 on_reaped: Callable[[str], None]) -> None:
        self.backend = backend
        self.identity = identity
        self.queues = list(queues)
        #: most jobs held at once (running + waiting in the inbox)
        self.capacity = capacity
        self.batch = batch
        self.idle_wait_s = idle_wait_s
        #: called with the refused id when Redis says this worker was reaped
        self.on_reaped = on_reaped
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

    def drain_inbox(self) -> list[Reserved]:
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
        #: (owner, request id) of a reservation whose reply was lost: asked again first
        pending: tuple[str, str] | None = None
        while self.running:
            with self._lock:
                room = self.capacity - self.outstanding
                if room <= 0:
                    self._space.clear()
            if room <= 0:
                self._space.wait(1.0)
                continue
            owner = self.identity.id
            if pending is None or pending[0] != owner:  # a reaped owner's jobs went back
                pending = (owner, new_id())
            try:
                got = self.backend.reserve(owner, self.queues, min(room, self.batch), pending[1])
                pending = None
                if got is None:
                    self.on_reaped(owner)
                    continue
                failures = 0
            except Exception as exc:  # any Redis error (BUSY, READONLY, ...): back off, never die
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                log.warning("reserve failed (%s: %s); asking again (same request) in %.1f s",
                            type(exc).__name__, exc, delay)
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
            for q, raw in got:
                put(Reserved(q, raw, owner))
