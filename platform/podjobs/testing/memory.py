"""An in-memory queue backend for tests: what `podjobs.testing` enqueues to and settles on.

`MemoryBackend` keeps the jobs an application enqueues (`Captured`, in enqueue order) and
takes a worker's settlements like Redis would: an ACK enqueues its follow-ups and releases
the unique key, a RETRY or REENQUEUE puts the new payload back, a DEAD lands in `dead`.
It never blocks and holds no server; times are only recorded (`due_ms`), never waited for.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from podjobs.quota import TenantQuota
from podjobs.settlement import Kind, Settlement
from podjobs.status import StatusWrite


@dataclass
class Captured:
    """One job waiting in the memory backend (its payload as a worker would read it)."""

    queue: str
    payload: dict[str, Any]
    #: when it is due (ms since the epoch): a delayed job, a retry; 0 = now
    due_ms: int = 0

    @property
    def id(self) -> str:
        return str(self.payload["id"])

    @property
    def job(self) -> str:
        return str(self.payload["job"])

    @property
    def args(self) -> list[Any]:
        return list(self.payload.get("args") or [])

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.payload.get("kwargs") or {})

    @property
    def tenant(self) -> str | None:
        t = self.payload.get("tenant")
        return None if t is None else str(t)

    @property
    def attempt(self) -> int:
        return int(self.payload.get("attempt") or 0)

    def __repr__(self) -> str:
        tenant = f", tenant={self.tenant!r}" if self.tenant is not None else ""
        return f"<{self.job}({self.args!r}, {self.kwargs!r}){tenant} on {self.queue!r}>"


class MemoryBackend:
    """The `podjobs.backend.Backend` operations an enqueuer and an executor use, in memory.

    `on_enqueue`, when set, is called after each enqueue by the application (the inline
    mode runs the jobs there)."""

    url = "memory://podjobs.testing"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        #: waiting jobs, in the order they were enqueued (follow-ups and retries appended)
        self.jobs: list[Captured] = []
        #: every job the application enqueued (not follow-ups or retries), in order
        self.history: list[Captured] = []
        #: jobs that ended in the dead set: their dead payloads
        self.dead: list[dict[str, Any]] = []
        #: unique key -> job id holding it
        self.unique: dict[str, str] = {}
        self.on_enqueue: Callable[[], None] | None = None

    # -- what the enqueuer calls --------------------------------------------------------

    def enqueue(self, queue: str, payloads: Sequence[str], *, delay_ms: int | None = None,
                at_ms: int | None = None, unique: tuple[str, int, str] | None = None,
                status: StatusWrite | None = None, quota: TenantQuota | None = None,
                tenant: str | None = None) -> int:
        """`tenant` is not used (one FIFO per queue: no fair share here); `quota` is not
        enforced here: tenant quotas live in a pod's Redis (test them with the
        `podjobs_redis` fixture)."""
        now = time.time_ns() // 1_000_000
        due = now + delay_ms if delay_ms else (at_ms or 0)
        with self._lock:
            if unique is not None:
                if unique[0] in self.unique:
                    return 0
                self.unique[unique[0]] = unique[2]
            for text in payloads:
                c = Captured(queue, json.loads(text), due)
                self.jobs.append(c)
                self.history.append(c)
        if self.on_enqueue is not None:
            self.on_enqueue()
        return len(payloads)

    def hold(self, tenant: str, queue: str, items: Sequence[tuple[str, str]],
             status: StatusWrite | None = None) -> bool:
        self.enqueue(queue, [text for _, text in items])
        return True

    # -- what the executor's settler calls ----------------------------------------------

    def settle(self, worker_id: str, queue: str, s: Settlement) -> bool:
        with self._lock:
            if s.unique is not None:
                self.unique.pop(s.unique, None)
            now = time.time_ns() // 1_000_000
            if s.kind in (Kind.ACK, Kind.FORWARD, Kind.HOLD):
                for q, text in s.children:
                    self.jobs.append(Captured(q, json.loads(text)))
            elif s.kind in (Kind.RETRY, Kind.REENQUEUE):
                self.jobs.append(Captured(queue, json.loads(s.payload), now + s.delay_ms))
            elif s.kind is Kind.DEAD:
                self.dead.append(json.loads(s.payload))
        return True

    def ack(self, worker_id: str, acks: Mapping[str, Sequence[str]],
            starts: Sequence[tuple[str, str, bool, StatusWrite]] = (),
            tracked: Mapping[str, Sequence[tuple[str, bool, StatusWrite]]] | None = None) -> int:
        return sum(len(ids) for ids in acks.values()) + sum(
            len(v) for v in (tracked or {}).values())

    # -- the rest of the protocol: nothing to do in memory ------------------------------

    def reserve(self, worker_id: str, queues: Sequence[str], n: int,
                request_id: str = "") -> list[tuple[str, bytes]] | None:
        return []

    def recover(self, worker_id: str, queues: Sequence[str], force: bool = False) -> int:
        return 0

    def requeue(self, worker_id: str, queue: str, items: Sequence[tuple[str, str | bytes]]) -> int:
        return 0

    def promote(self, queues: Sequence[str], limit: int = 1000) -> int:
        return 0

    def heartbeat(self, worker_id: str, ttl_ms: int, first: bool, info: Mapping[str, str]) -> bool:
        return True

    def wait_for_work(self, queues: Sequence[str], timeout_s: float) -> bool:
        return bool(self.jobs)

    def reserve_after_wait(self, worker_id: str, queues: Sequence[str], n: int, request_id: str,
                           timeout_s: float) -> list[tuple[str, bytes]] | None:
        return self.reserve(worker_id, queues, n, request_id)

    def dead_worker_ids(self) -> list[tuple[str, list[str]]]:
        return []

    def close(self) -> None:
        pass

    def release_connection(self) -> None:
        pass

    def take_next(self) -> Captured | None:
        """Remove and return the first waiting job (None when none waits)."""
        with self._lock:
            return self.jobs.pop(0) if self.jobs else None
