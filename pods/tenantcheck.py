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

Move barrier: when the directory shows a tenant moving away from this pod and
this worker runs none of its jobs any more, the worker records an ack
(`pj:moveack:TENANT`, field = worker id, value = the tenant's directory
version) in its pod's Redis; the mover waits for every live worker's ack.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.errors import BackendUnavailable
from podjobs.executor import Admit, Defer, Forward, Refuse
from podjobs.identity import Identity
from podjobs.payload import encode
from podjobs.status import StatusWrite
from podjobs.stops import StopSignals

from .directory import Change
from .router import Router
from .topology import TenantState

log = logging.getLogger("podjobs.tenantcheck")

#: seconds a job waits when the worker's directory is stale (ZooKeeper unreachable)
STALE_DEFER_S = 1.0


class TenantCheck:
    def __init__(self, router: Router, pod: str, backend: RedisBackend,
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

    def check(self, data: dict[str, Any]) -> Admit | Forward | Refuse | Defer | None:
        tenant = data["tenant"]
        if self.router.directory.stale:
            # cut off from ZooKeeper: the tenant may have moved meanwhile; do not guess
            return Defer(STALE_DEFER_S, "the tenant directory is stale (ZooKeeper unreachable)")
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

    def done(self, data: dict[str, Any]) -> None:
        tenant = data["tenant"]
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
            backend.enqueue(queue, [text], status=status)

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
        try:
            self.backend.redis.hset(keys.move_acks(tenant), self.identity.id, version)
        except Exception as exc:  # the mover keeps waiting; the next change or job retries
            log.warning("could not ack the move of tenant %s: %s", tenant, exc)

    def ack_all_moving(self) -> None:
        """Ack every tenant moving away from this pod whose jobs this worker is not running."""
        for tenant, entry in self.router.directory.tenants().items():
            if entry.state != TenantState.ACTIVE:
                try:
                    self._ack_if_moving(tenant)
                except BackendUnavailable:
                    pass
