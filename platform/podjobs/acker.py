"""Batched acks: executors hand over (queue, job id, owner); one thread flushes them.

1. `add` is called by executor threads and is cheap (a list append under a lock).
2. The ack thread wakes when the first ack arrives and flushes everything that
   accumulated, in one round trip (one `ack_many` call per queue, pipelined);
   under load the next batch gathers while a flush is on the wire.
3. `flush()` empties the buffer synchronously (shutdown).
4. Tracked jobs (podjobs.status) go through here too: `started(queue, id, in_flight,
   status)` buffers the "running" write of a job about to run, `add_tracked` its success
   with the "succeeded" write. A flush sends the starts before the acks, so a job's start
   never lands after its end; an executor settling a tracked job any other way (retry,
   dead, follow-ups) flushes first for the same reason. A start is written only while the
   job is still in this worker's in-flight hash (an at-most-once job, acked before it ran:
   only while its record says queued or retrying), so a start sent late (again after a
   failed flush, or by a worker that was reaped meanwhile) never overwrites what happened
   since.
5. Each ack names its owner: the worker generation that reserved the job (podjobs.identity),
   whose in-flight hash it addresses; a flush sends one batch per owner (nearly always one).
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from podjobs.backend import Backend
from podjobs.status import StatusWrite

#: queue -> [(job id, in flight, succeeded status)]
Tracked = dict[str, list[tuple[str, bool, StatusWrite]]]
#: a started job: (queue, job id, in flight, running status)
Start = tuple[str, str, bool, StatusWrite]
#: a tracked job's start (True) or success (False): (start?, owner, queue, job id, in flight, status)
Op = tuple[bool, str, str, str, bool, StatusWrite]

log = logging.getLogger("podjobs.acker")


class Acker:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        #: (owner, queue) -> job ids
        self._pending: dict[tuple[str, str], list[str]] = {}
        #: tracked jobs' starts and successes (Op), in the order they happened; deque appends
        #: and pops need no lock (10 executor threads contending for one showed)
        self._ops: deque[Op] = deque()
        self._event = threading.Event()
        self._stopped = False
        self._flush_lock = threading.Lock()
        self._failed = False
        self._thread = threading.Thread(target=self._loop, name="podjobs-acker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, queue: str, job_id: str, owner: str) -> None:
        key = (owner, queue)
        with self._lock:
            ids = self._pending.get(key)
            if ids is None:
                self._pending[key] = [job_id]
            else:
                ids.append(job_id)
        if not self._event.is_set():
            self._event.set()

    def started(self, queue: str, job_id: str, in_flight: bool, status: StatusWrite,
                owner: str) -> None:
        """A tracked job is about to run: its record says running at the next flush (if the
        job is then still in flight; `in_flight` False: an at-most-once job, acked already)."""
        self._ops.append((True, owner, queue, job_id, in_flight, status))
        if not self._event.is_set():
            self._event.set()

    def add_tracked(self, queue: str, job_id: str, status: StatusWrite, in_flight: bool,
                    owner: str) -> None:
        """A tracked job succeeded: ack it and write its `status` at the next flush."""
        self._ops.append((False, owner, queue, job_id, in_flight, status))
        if not self._event.is_set():
            self._event.set()

    def _take_ops(self) -> dict[str, tuple[list[Start], Tracked]]:
        """The buffered starts and successes, by owner."""
        out: dict[str, tuple[list[Start], Tracked]] = {}
        pop = self._ops.popleft
        while True:
            try:
                start, owner, queue, jid, in_flight, status = pop()
            except IndexError:
                return out
            starts, tracked = out.setdefault(owner, ([], {}))
            if start:
                starts.append((queue, jid, in_flight, status))
            else:
                tracked.setdefault(queue, []).append((jid, in_flight, status))

    def flush(self) -> int:
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
                self._event.clear()
            # a job's start is appended before its success: it is taken in this batch or an
            # earlier one, and a batch writes its starts first
            ops = self._take_ops() if self._ops else {}
            if not pending and not ops:
                return 0
            batches: dict[str, dict[str, list[str]]] = {}
            for (owner, q), ids in pending.items():
                batches.setdefault(owner, {})[q] = ids
            n = 0
            for owner in set(batches) | set(ops):
                batch = batches.get(owner, {})
                starts, tracked = ops.get(owner, ([], {}))
                try:
                    if starts or tracked:
                        n += self.backend.ack(owner, batch, starts, tracked)
                    else:
                        n += self.backend.ack(owner, batch)
                except Exception as exc:  # keep them: the next flush tries again
                    self._keep(owner, batch, starts, tracked, exc)
            return n

    def _keep(self, owner: str, batch: dict[str, list[str]], starts: list[Start],
              tracked: Tracked, exc: Exception) -> None:
        n = sum(map(len, batch.values())) + sum(map(len, tracked.values()))
        log.warning("ack of %d jobs failed (%s: %s); retrying", n, type(exc).__name__, exc)
        with self._lock:
            for q, ids in batch.items():
                self._pending.setdefault((owner, q), [])[:0] = ids
            self._event.set()
        back: list[Op] = [(True, owner, q, jid, f, st) for q, jid, f, st in starts]
        back += [(False, owner, q, jid, f, st) for q, items in tracked.items() for jid, f, st in items]
        self._ops.extendleft(reversed(back))
        self._failed = True

    def _loop(self) -> None:
        while not self._stopped:
            self._event.wait()
            if self._stopped:
                break
            self.flush()
            if self._failed:
                self._failed = False
                threading.Event().wait(0.5)  # Redis is in trouble: do not spin

    def stop(self) -> None:
        self._stopped = True
        self._event.set()
        self._thread.join(timeout=5)
        self.flush()
