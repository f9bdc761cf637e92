"""The worker-side tenant check: a job runs only on its tenant's pod.

Before a job that names a tenant runs, the worker asks its cached directory:
- the tenant lives on this pod and is active: run it (counted as running), admitted
  under the entry's version, which the job's shard commits check against the
  tenant's move fence (pods/fence.py);
- it is being moved: send the job to the destination pod, where it is held
  until the move finishes (it is never run here once the worker saw the move);
- it lives on another pod: forward the job to that pod's queue (written there
  first, then acked here), so nothing of tenant A ever touches another shard;
- it is unknown (deleted from the directory): dead set with the reason.

It is the outermost link of a pod worker's middleware chain (podjobs.middleware): the
check is its `before_start` (a job that must not run here ends as a FORWARD, HOLD, DEAD
or REENQUEUE settlement), the write to the other pod its `before_settle` (written there
first, then acked here: a crash in between duplicates, never loses), the running count's
end its `after_settle`.

Move barrier: when the directory shows a tenant moving away from this pod and
this worker runs none of its jobs any more, the worker records an ack
(`pj:moveack:TENANT`, field = worker id, value = the tenant's directory
version) in its pod's Redis; the mover waits for every live worker's ack.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from podjobs.backend import Backend
from podjobs.delivery import TENANT, Delivery
from podjobs.errors import BackendUnavailable
from podjobs.identity import Identity
from podjobs.invoke import Outcome
from podjobs.jobs import JobDef
from podjobs.middleware import Middleware
from podjobs.payload import encode
from podjobs.settlement import Kind, Settlement
from podjobs.status import StatusWrite
from podjobs.stops import StopSignals

from .directory import Change, DirectoryUnavailable
from .router import Router
from .topology import TenantState

log = logging.getLogger("podjobs.tenantcheck")

#: seconds a job waits when the worker's directory is stale (ZooKeeper unreachable)
STALE_DEFER_S = 1.0


@dataclass(frozen=True)
class Forward:
    """The job's tenant lives on another pod: send the job there, do not run it here.
    `hold`: the tenant is being moved to that pod; the job waits there until the move ends."""

    pod: str
    hold: bool = False


@dataclass(frozen=True)
class Admit:
    """Run the job here. `version`: the directory version of the tenant's entry that
    admitted it; its shard commits are refused once the tenant's move fence is larger."""

    version: int


@dataclass(frozen=True)
class Refuse:
    """The job must not run anywhere (for example its tenant is unknown): dead set."""

    reason: str
    message: str


@dataclass(frozen=True)
class Defer:
    """Not now (for example the directory may be stale): put the job back for later."""

    delay: float
    reason: str


class TenantCheck(Middleware):
    def __init__(self, router: Router, pod: str, backend: Backend,
                 identity: Identity) -> None:
        self.router = router
        self.pod = pod
        self.backend = backend
        #: the worker's identity: move acks name its current generation (podjobs.identity)
        self.identity = identity
        self._running: Counter[str] = Counter()
        #: the worker's stop signals, to interrupt a moving tenant's running jobs
        self.stops: StopSignals | None = None
        self._lock = threading.Lock()
        router.directory.add_listener(self._on_change)

    def close(self) -> None:
        self.router.directory.remove_listener(self._on_change)

    # -- the middleware link -------------------------------------------------------------

    def wants(self, jd: JobDef, shape: int) -> bool:
        return bool(shape & TENANT)

    def worker_start(self, worker: Any) -> None:
        self.stops = worker.stops  # to interrupt the running jobs of a tenant moving away

    def before_start(self, d: Delivery, jd: JobDef) -> Settlement | None:
        decision = self.check(d.tenant or "")
        if isinstance(decision, Admit):
            d.tenant_version = decision.version
            return None
        if isinstance(decision, Defer):
            log.info("job %s %s of tenant %s deferred %.1f s: %s", d.job, d.id, d.tenant,
                     decision.delay, decision.reason)
            return Settlement(Kind.REENQUEUE, d.id, delay_ms=int(decision.delay * 1000),
                              payload=encode(d.data, 1 << 30), reason="deferred")
        if isinstance(decision, Refuse):
            return Settlement(Kind.DEAD, d.id, reason=decision.reason,
                              error={"class": "WrongPod", "message": decision.message, "trace": ""})
        s = Settlement(Kind.HOLD if decision.hold else Kind.FORWARD, d.id, pod=decision.pod)
        fwd = dict(d.data)
        fwd["pod"] = decision.pod
        fwd["forwarded_from"] = self.pod
        s.remote = fwd
        return s

    def before_settle(self, d: Delivery, jd: JobDef, s: Settlement) -> Settlement:
        if (s.kind is Kind.FORWARD or s.kind is Kind.HOLD) and s.remote is not None:
            # written there first: a crash now duplicates, never loses. A tracked job's record
            # is written there with it (queued), the one here says where it went (moved)
            self.forward(Forward(s.pod, s.kind is Kind.HOLD), d.queue, s.remote, s.remote_status)
            log.info("job %s %s of tenant %s %s from pod %s to %s", d.job, d.id, d.tenant,
                     "held for a move" if s.kind is Kind.HOLD else "forwarded", self.pod, s.pod)
        return s

    def after_settle(self, d: Delivery, jd: JobDef, out: Outcome | None,
                     s: Settlement | None) -> None:
        if d.tenant_version is not None and d.tenant is not None:
            self.done(d.tenant)

    # -- decisions -------------------------------------------------------------------------

    def check(self, tenant: str) -> Admit | Forward | Refuse | Defer:
        """Where a job of `tenant` belongs; an Admit counts it as running here until `done`."""
        if self.router.directory.stale:
            # cut off from ZooKeeper: the tenant may have moved meanwhile; do not guess
            return Defer(STALE_DEFER_S, "the tenant directory is stale (ZooKeeper unreachable)")
        try:
            self.router.directory.tenant(tenant)  # its bucket loaded (and watched) first
        except DirectoryUnavailable as exc:
            return Defer(STALE_DEFER_S, str(exc))
        with self._lock:
            entry = self.router.directory.tenant(tenant)
            if entry is None:
                return Refuse("unknown_tenant",
                              f"tenant {tenant!r} is not in the directory; the job was not run on pod "
                              f"{self.pod}. Assign the tenant, then retry the job from the dead set")
            if entry.state != TenantState.ACTIVE:
                to = str((entry.move or {}).get("to") or entry.pod)
                return Forward(to, hold=True)
            if entry.pod != self.pod:
                return Forward(entry.pod)
            self._running[tenant] += 1
            return Admit(entry.version)  # its shard commits check the move fence (pods/fence.py)

    def done(self, tenant: str) -> None:
        """A job `check` admitted has been settled."""
        with self._lock:
            self._running[tenant] -= 1
            if self._running[tenant] > 0:
                return
            del self._running[tenant]
        self._ack_if_moving(tenant)

    def forward(self, decision: Forward, queue: str, data: dict[str, Any],
                status: StatusWrite | None = None) -> None:
        """Write the job to the pod it belongs on (`status`: a tracked job's record there)."""
        backend = self.router.backend(decision.pod)
        text = encode(data, 1 << 30)
        if decision.hold:
            backend.hold(data["tenant"], queue, [(data["id"], text)], status=status)
        else:
            tenant = data.get("tenant")
            backend.enqueue(queue, [text], status=status,
                            tenant=tenant if isinstance(tenant, str) else None)

    # -- move barrier ---------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        if change.kind == "tenant" and not change.removed:
            entry = self.router.directory.tenant(change.name)
            if (self.stops is not None and entry is not None and entry.state != TenantState.ACTIVE
                    and (entry.move or {}).get("from", entry.pod) == self.pod):
                # long jobs of a tenant moving away checkpoint and put themselves back
                self.stops.stop_tenant(change.name)
            self._ack_if_moving(change.name)

    def _ack_if_moving(self, tenant: str) -> None:
        with self._lock:
            entry = self.router.directory.tenant(tenant)
            if entry is None or entry.state == TenantState.ACTIVE or self._running.get(tenant):
                return
            if (entry.move or {}).get("from", entry.pod) != self.pod:
                return
            version = entry.version
        ack_move = getattr(self.backend, "ack_move", None)
        if ack_move is None:
            return  # a pod on the SQL backend: tenant moves are refused there (pods/moves.py)
        try:
            ack_move(tenant, self.identity.id, version)
        except Exception as exc:  # the mover keeps waiting; the next change or job retries
            log.warning("could not ack the move of tenant %s: %s", tenant, exc)

    def ack_all_moving(self) -> None:
        """Ack every tenant moving away from this pod whose jobs this worker is not running."""
        for tenant, entry in self.router.directory.moving().items():
            if entry.state != TenantState.ACTIVE:
                try:
                    self._ack_if_moving(tenant)
                except BackendUnavailable:
                    pass
