"""Batched acks: executors hand over (queue, job id); one thread flushes them.

1. `add` is called by executor threads and is cheap (a list append under a lock).
2. The ack thread wakes when the first ack arrives and flushes everything that
   accumulated, in one round trip (one `ack_many` call per queue, pipelined);
   under load the next batch gathers while a flush is on the wire.
3. `flush()` empties the buffer synchronously (shutdown).
"""

from __future__ import annotations

import logging
import threading

from podjobs.backend import Backend

log = logging.getLogger("podjobs.acker")


class Acker:
    def __init__(self, backend: Backend, worker_id: str) -> None:
        self.backend = backend
        self.worker_id = worker_id
        self._lock = threading.Lock()
        self._pending: dict[str, list[str]] = {}
        self._event = threading.Event()
        self._stopped = False
        self._flush_lock = threading.Lock()
        self._failed = False
        self._thread = threading.Thread(target=self._loop, name="podjobs-acker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, queue: str, job_id: str) -> None:
        with self._lock:
            ids = self._pending.get(queue)
            if ids is None:
                self._pending[queue] = [job_id]
            else:
                ids.append(job_id)
        if not self._event.is_set():
            self._event.set()

    def flush(self) -> int:
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
                self._event.clear()
            if not batch:
                return 0
            try:
                return self.backend.ack(self.worker_id, batch)
            except Exception as exc:  # keep them: the next flush tries again
                log.warning("ack of %d jobs failed (%s: %s); retrying", sum(map(len, batch.values())),
                            type(exc).__name__, exc)
                with self._lock:
                    for q, ids in batch.items():
                        self._pending.setdefault(q, [])[:0] = ids
                    self._event.set()
                self._failed = True
                return 0

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
