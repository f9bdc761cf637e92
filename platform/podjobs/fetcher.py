"""The fetcher: keeps a worker's local inbox filled from Redis.

1. Waits until the worker has room (running + buffered below its limit).
2. Reserves up to that many jobs in one call, in strict priority order of the
   worker's queue list; each lands in the worker's in-flight hash atomically.
3. When nothing is ready, the waiting is handed to an idle executor thread: the fetcher
   puts one `WAIT` token in the inbox and parks. The executor that takes it blocks on the
   queues' wake lists (BLPOP) with the next reservation sent behind the BLPOP on the same
   connection (`Backend.reserve_after_wait`: Redis runs it the moment a wake token
   arrives), then runs the first job it got itself. So an idle worker's job starts one
   round trip after its enqueue, with no hand-off between threads. Exactly one party holds
   the reserving role at a time (the fetcher, or the WAIT token in the inbox or in an
   executor's hands), so a lost reply's request id (5.) is never asked twice at once.
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

from podjobs.backend import Backend
from podjobs.identity import Identity
from podjobs.ids import new_id
from podjobs.record import Record

log = logging.getLogger("podjobs.fetcher")

#: how long a job that took the waiting role with it may keep it: after this the fetcher
#: thread hands the waiting to another idle executor (jobs enqueued meanwhile wait at most
#: this much longer than on an idle worker)
OWED_S = 0.002


class Reserved(Record):
    """A job this worker reserved: its queue, its payload as Redis holds it, and the worker
    id (generation) whose in-flight hash holds it."""

    __slots__ = ("queue", "raw", "owner")

    def __init__(self, queue: str, raw: bytes, owner: str) -> None:
        self.queue = queue
        self.raw = raw
        self.owner = owner


class Wait:
    """The inbox token that hands the waiting for work to an idle executor thread."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "WAIT"


WAIT = Wait()

#: an inbox item; None tells an executor thread to stop; WAIT asks it to wait for work
Item = Reserved | Wait | None


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
        #: set when the reserving role comes back to the fetcher thread (or on stop)
        self._resume = threading.Event()
        self.running = True
        #: (owner, request id) of a reservation whose reply was lost: asked again first
        self._pending: tuple[str, str] | None = None
        self._failures = 0
        #: the thread (ident) running a job that keeps the waiting role ("owed"), or None;
        #: `_owed_gen` counts hand-outs, `_owed_evt` tells the fetcher thread to time one
        self._owed_by: int | None = None
        self._owed_gen = 0
        self._owed_evt = threading.Event()
        #: set once Redis has answered the first reservation (or it failed): the worker starts
        #: its other threads after it, so that none competes with that round trip
        self.answered = threading.Event()
        #: jobs the first answered reservation brought
        self.first_count = 0
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
        self._resume.set()
        self._owed_evt.set()
        self.answered.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def drain_inbox(self) -> list[Reserved]:
        """Take every unstarted job out of the inbox (leaves stop markers and WAIT out)."""
        items = []
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue_mod.Empty:
                break
            if isinstance(item, Reserved):
                items.append(item)
                self.done_one()
        return items

    def _room(self) -> int:
        with self._lock:
            room = self.capacity - self.outstanding
            if room <= 0:
                self._space.clear()
        return room

    def _reserve(self, room: int, wait: bool) -> list[Reserved] | None:
        """One reservation of up to min(room, batch) jobs (after waiting for a wake token
        when `wait`), counted as outstanding. None after an error (logged, backed off) or a
        reap (the identity is renewed): ask again."""
        owner = self.identity.id
        pending = self._pending
        if pending is None or pending[0] != owner:  # a reaped owner's jobs went back
            pending = self._pending = (owner, new_id())
        try:
            n = min(room, self.batch)
            if wait:
                got = self.backend.reserve_after_wait(owner, self.queues, n, pending[1], self.idle_wait_s)
            else:
                got = self.backend.reserve(owner, self.queues, n, pending[1])
            self._pending = None
            if got is None:
                self.on_reaped(owner)
                return None
            self._failures = 0
        except Exception as exc:  # any Redis error (BUSY, READONLY, ...): back off, never die
            self.answered.set()  # no use holding the worker's other threads back
            self._failures += 1
            delay = min(5.0, 0.1 * 2**self._failures)
            log.warning("reserve failed (%s: %s); asking again (same request) in %.1f s",
                        type(exc).__name__, exc, delay)
            threading.Event().wait(delay)
            return None
        if got:
            with self._lock:
                self.outstanding += len(got)
        return [Reserved(q, raw, owner) for q, raw in got]

    def _loop(self) -> None:
        answered = self.answered
        while self.running:
            room = self._room()
            if room <= 0:
                self._space.wait(1.0)
                continue
            got = self._reserve(room, wait=False)
            if got is None:
                continue  # asked again at once: a reservation made before an error is replayed
            if not got:
                # nothing ready: an idle executor waits for work (take_wait) until a full
                # batch says there may be more, then the role comes back here
                self._resume.clear()
                if not self.running:
                    break
                self.inbox.put(WAIT)
                if not answered.is_set():
                    answered.set()
                self._park()
                continue
            put = self.inbox.put
            for item in got:
                put(item)
            if not answered.is_set():
                self.first_count = len(got)
                answered.set()

    def _park(self) -> None:
        """Until the reserving role comes back (or stop): an owed role whose job outlasts
        OWED_S is handed to the next idle executor as a WAIT token."""
        while self.running and not self._resume.is_set():
            if not self._owed_evt.wait(1.0):
                continue
            self._owed_evt.clear()
            with self._lock:
                gen = self._owed_gen
            self._resume.wait(OWED_S)
            with self._lock:
                if self._owed_by is not None and self._owed_gen == gen:
                    self._owed_by = None
                    self.inbox.put(WAIT)
                elif self._owed_by is not None:
                    self._owed_evt.set()  # owed again since: time that one

    def reclaim(self, me: int) -> bool:
        """Called by executor thread `me` before it takes its next item: True when it still
        holds the waiting role its last job took (it then waits for work itself). With jobs
        in the inbox the role goes behind them as a WAIT token instead."""
        if self._owed_by != me:  # only `me` makes it `me`: no lock needed to see it is not
            return False
        with self._lock:
            if self._owed_by != me:  # handed out by the fetcher thread meanwhile
                return False
            self._owed_by = None
            if self.inbox.empty():
                return True
        self.inbox.put(WAIT)
        return False

    def take_wait(self) -> list[Reserved]:
        """Called by an idle executor thread that took WAIT from the inbox: wait for work and
        reserve in one round trip, until jobs come (or the fetcher stops). The caller runs
        the first job itself; the rest are in the inbox. The reserving role goes on: back to
        the fetcher thread after a full batch (more may be ready), else (the queues are
        empty now) as a new WAIT token for the next idle executor."""
        while self.running:
            room = self._room()
            if room <= 0:  # every slot is full (prefetch): the fetcher thread waits for room
                break
            got = self._reserve(room, wait=True)
            if not got:
                continue
            for item in got[1:]:
                self.inbox.put(item)
            if len(got) >= min(room, self.batch) or not self.running:
                self._resume.set()  # a full batch: more may be ready
            else:  # the queues are empty now: this thread waits again after its job
                with self._lock:
                    self._owed_by = threading.get_ident()
                    self._owed_gen += 1
                self._owed_evt.set()
            return got[:1]
        self._resume.set()
        return []
