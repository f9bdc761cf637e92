"""The migrations leader's view of each shard's revision, read concurrently and only when needed.

1. `ShardReader(read)`: `readings(urls, changed)` returns pod -> `Reading` (the
   revision, or the error). It reads a shard only when it has no reading yet, its URL
   changed, its pod is in `changed` (its run records changed since the last pass: a
   revision ran or finished there), its last reading failed RETRY_S ago, or its
   reading is RESYNC_S old (someone ran alembic by hand). An idle pass over 100 shards
   therefore reads none of them.
2. Reads run on a bounded pool (THREADS) through `db.reader` engines (short connect and
   read timeouts); a pass waits at most WAIT_S for them, then goes on with the last
   reading of a shard that has not answered yet (or "no answer yet"), and never starts a
   second read of a shard while one is under way: a blackholed shard costs its thread
   for the read timeout, never the pass.
   A pod whose runs changed while its shard was being read is read again once that read
   ends (that read may have started before the change: a revision that completed since
   would otherwise be seen only at the next re-sync, RESYNC_S later).
3. `due(...)` is the pure decision (tests/test_scheduler_pure.py reads it from a table).
4. `forget()` drops every reading (a new term: another leader may have migrated).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

#: shards read at the same time at most
THREADS = 16
#: seconds a pass waits for the reads it started
WAIT_S = 1.0
#: seconds after which a shard read anyway (a revision applied by hand)
RESYNC_S = 30.0
#: seconds before a failed read is tried again
RETRY_S = 2.0


@dataclass(frozen=True)
class Reading:
    """One read of a shard: `known` with `current` (None: no alembic table), or `error`;
    `pending`: no reading yet, the first read is still under way."""

    url: str
    at: float
    known: bool
    current: str | None = None
    error: str = ""
    pending: bool = False


def due(reading: Reading | None, url: str, changed: bool, busy: bool, now: float,
        resync_s: float = RESYNC_S, retry_s: float = RETRY_S) -> bool:
    """Whether to start a read of a shard now (pure; see the module doc)."""
    if busy:
        return False
    if reading is None or reading.url != url or changed:
        return True
    if not reading.known:
        return now - reading.at >= retry_s
    return now - reading.at >= resync_s


def read_revision(url: str) -> str | None:
    """The alembic revision of shard `url` through its short-timeout `db.reader` engine."""
    from podjobs import db

    from .revisions import current_revision

    with db.reader(url).connect() as conn:
        return current_revision(conn)


class ShardReader:
    """See the module doc. `read(url)` returns the revision or raises."""

    def __init__(self, read: Callable[[str], str | None] = read_revision, *,
                 threads: int = THREADS, wait_s: float = WAIT_S, resync_s: float = RESYNC_S,
                 clock: Callable[[], float] = time.time) -> None:
        self._read = read
        self._resync_s = resync_s
        self._wait_s = wait_s
        self._clock = clock
        self._pool = cf.ThreadPoolExecutor(threads, thread_name_prefix="shard-read")
        self._lock = threading.Lock()
        self._readings: dict[str, Reading] = {}
        self._busy: dict[str, cf.Future[Reading]] = {}
        #: pods whose runs changed while their shard was being read: read again after
        self._stale: set[str] = set()
        #: reads started (all passes), for tests and the bench
        self.started = 0

    def forget(self) -> None:
        with self._lock:
            self._readings.clear()
            self._stale.clear()

    def _one(self, pod: str, url: str) -> Reading:
        try:
            cur = self._read(url)
            r = Reading(url, self._clock(), True, cur)
        except (SQLAlchemyError, OSError) as exc:
            r = Reading(url, self._clock(), False, error=f"{type(exc).__name__}: {exc}"[:500])
        with self._lock:
            self._readings[pod] = r
            self._busy.pop(pod, None)
        return r

    def readings(self, urls: Mapping[str, str], changed: set[str]) -> dict[str, Reading]:
        """pod -> its latest reading, after starting the reads that are due and waiting up to
        `wait_s` for them; a pod without any reading yet gets one saying so."""
        now = self._clock()
        started: list[cf.Future[Reading]] = []
        with self._lock:
            for pod, url in urls.items():
                busy = pod in self._busy
                if busy and pod in changed:
                    self._stale.add(pod)
                if due(self._readings.get(pod), url, pod in changed or pod in self._stale, busy,
                       now, self._resync_s):
                    f = self._pool.submit(self._one, pod, url)
                    self._busy[pod] = f
                    self._stale.discard(pod)
                    started.append(f)
                    self.started += 1
        if started:
            cf.wait(started, timeout=self._wait_s)
        out: dict[str, Reading] = {}
        with self._lock:
            for pod, url in urls.items():
                r = self._readings.get(pod)
                if r is None or r.url != url:
                    r = Reading(url, now, False, error=f"no answer from the shard within "
                                                       f"{self._wait_s:g} s (still reading)",
                                pending=True)
                out[pod] = r
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
