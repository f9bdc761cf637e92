"""The shard-aware enqueuer: tenant -> pod -> that pod's Redis.

1. `Router(directory)` answers `resolve(tenant, pod)` from the in-memory
   directory that ZooKeeper watches keep fresh: no ZooKeeper round trip per
   enqueue. One backend per pod (Redis, or SQL for a pod with backend "sql"), made on first use.
2. Unknown tenant: `UnknownTenant` before anything is written. A draining pod
   takes no new jobs (`PodDraining`). A tenant being moved: `TenantMoving`.
3. Without a tenant a job goes to the pod named with `pod=`;
   `enqueue_all_pods` fans one job out to every active pod: one enqueue (one
   round trip) per pod, sent from a bounded pool of FAN_OUT_THREADS threads, so
   100 pods cost about 100 / FAN_OUT_THREADS round trips of wall time. Pods
   whose Redis fails do not stop the others: `FanOutIncomplete` then carries
   the handles of the pods that took the job and the error of each that did not.
4. `connect(hosts, root)` builds ZooKeeper client + directory + router and
   installs it as the process-wide client (`podjobs.configure(zk=...)`).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from podjobs.backend import Backend, open_backend
from podjobs.client import Client, JobHandle, Target, check_arguments
from podjobs.errors import (
    BackendUnavailable,
    ConfigurationError,
    PodDraining,
    PodjobsError,
    TenantMoving,
    UnknownTenant,
)
from podjobs.jobs import Call
from podjobs.quota import TenantQuota, effective

from .directory import Directory
from .topology import PodState, TenantState
from .zk import ZK


class Router:
    def __init__(self, directory: Directory, *, check_backends: bool = True) -> None:
        self.directory = directory
        self.check_backends = check_backends
        self._backends: dict[str, Backend] = {}
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()
        #: checked targets by pod, and by tenant (with its quota), valid while the
        #: directory's version is unchanged
        self._targets: dict[str, Target] = {}
        self._by_tenant: dict[str, Target] = {}
        self._targets_version = -1

    def backend(self, pod: str) -> Backend:
        """The queue backend of a pod (its Redis, or its shard's tables for a pod with
        backend "sql"; made once, remade if the pod's URL changed)."""
        info = self.directory.pod(pod)
        url = info.shard_url if info.backend == "sql" else info.redis_url
        b = self._backends.get(pod)
        if b is not None and self._urls.get(pod) == url:
            return b
        with self._lock:
            b = self._backends.get(pod)
            if b is None or self._urls.get(pod) != url:
                b = open_backend(info.backend, info.redis_url, info.shard_url, check=self.check_backends)
                self._backends[pod] = b
                self._urls[pod] = url
            return b

    def pod_for(self, tenant: str | None, pod: str | None) -> str:
        """Which pod a job goes to; raises before anything is written."""
        if tenant is not None:
            entry = self.directory.tenant(tenant)
            if entry is None:
                self.directory.pod_of(tenant)  # raises UnknownTenant with the full message
                raise UnknownTenant(tenant)
            if entry.state != TenantState.ACTIVE:
                to = (entry.move or {}).get("to")
                if not to:
                    raise TenantMoving(
                        f"tenant {tenant!r} is {entry.state} with no destination recorded; see "
                        f"'podjobs tenants move --status {tenant}'")
                return str(to)  # held on the destination until the move finishes
            if pod is not None and pod != entry.pod:
                raise ConfigurationError(
                    f"tenant {tenant!r} lives on pod {entry.pod}, not {pod}; drop pod= or fix the tenant")
            pod = entry.pod
        if pod is None:
            raise ConfigurationError(
                "enqueue needs tenant= (routes to the tenant's pod) or pod= (a named pod); "
                "use podjobs.enqueue_all_pods(...) for a job every pod should run")
        p = self.directory.pod(pod)
        if p.state != PodState.ACTIVE:
            raise PodDraining(
                f"pod {pod} is {p.state.value} and takes no new jobs; set it active with "
                f"'podjobs pods set-state {pod} active' or move its tenants")
        return pod

    def resolve(self, tenant: str | None, pod: str | None) -> Target:
        d = self.directory
        version = d.version
        if tenant is not None and pod is None:
            # fast path: an active tenant on a pod already checked at this directory version
            entry = d.tenant(tenant)
            if entry is not None and entry.state == TenantState.ACTIVE and self._targets_version == version:
                cached = self._by_tenant.get(tenant)
                if cached is not None:
                    return cached
        name = self.pod_for(tenant, pod)
        entry = d.tenant(tenant) if tenant is not None else None
        hold = entry is not None and entry.state != TenantState.ACTIVE
        if self._targets_version != version:
            self._targets = {}
            self._by_tenant = {}
            self._targets_version = version
        target = self._targets.get(name) if not hold else None
        if target is None:
            target = Target(name, self.backend(name), hold=hold)
        if tenant is not None and entry is not None:
            q = effective(d.pod(name).quota, entry.quota if entry.pod == name else None)
            if q is not None:
                target = target._replace(quota=TenantQuota(tenant, q))
        if not hold:
            if target.quota is None:
                self._targets[name] = target
            if tenant is not None and pod is None:
                self._by_tenant[tenant] = target
        return target

    def active_pods(self) -> list[str]:
        return sorted(n for n, p in self.directory.pods().items() if p.state == PodState.ACTIVE)

    def close(self) -> None:
        for b in self._backends.values():
            b.close()


class PodClient(Client):
    """A Client whose resolver is a Router, with the fan-out helper."""

    def __init__(self, router: Router, zk: ZK | None = None) -> None:
        super().__init__(resolver=router.resolve)
        self.router = router
        self.zk = zk

    def close(self) -> None:
        self.router.close()
        self.router.directory.stop()
        if self.zk is not None:
            self.zk.stop()


def connect(hosts: str | None = None, root: str | None = None, *, timeout: float = 10.0,
            max_buckets: int | None = None) -> PodClient:
    """ZooKeeper client + directory (loaded, watched) + router, as a Client. `max_buckets`:
    tenant buckets kept loaded (None: $PODJOBS_DIRECTORY_BUCKETS, else 256)."""
    from .zk import zk_from_env

    zk = zk_from_env(hosts, root)
    zk.start(timeout)
    directory = Directory(zk, max_buckets=max_buckets)
    directory.start()
    return PodClient(Router(directory), zk)


#: threads `enqueue_all_pods` sends from at most (each does one round trip per pod)
FAN_OUT_THREADS = 4

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _fan_out_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(FAN_OUT_THREADS, thread_name_prefix="podjobs-fan-out")
    return _pool


class FanOutIncomplete(BackendUnavailable):
    """`enqueue_all_pods` reached some pods but not all: `handles` are the jobs enqueued,
    `failed` maps each pod that did not take the job to its error."""

    def __init__(self, handles: list[Any], failed: dict[str, Exception]) -> None:
        self.handles = handles
        self.failed = failed
        names = ", ".join(f"{p} ({type(e).__name__}: {e})" for p, e in sorted(failed.items()))
        super().__init__(
            f"enqueue_all_pods reached {len(handles)} of {len(handles) + len(failed)} active "
            f"pods; not enqueued on: {names}. Enqueue on those pods again with "
            f"job.enqueue(pod=NAME) once their Redis answers (the others have the job)")


def fan_out(client: Client, call: Call, pods: list[str]) -> list[JobHandle]:
    """Enqueue `call` once on each pod of `pods`, in parallel (at most FAN_OUT_THREADS at
    a time); the handles in `pods` order. A pod that fails does not stop the others."""
    check_arguments(call)  # a bad argument fails here, once, before any pod is written
    if len(pods) <= 1:
        return [client.enqueue_call(call, pod=p) for p in pods]
    pool = _fan_out_pool()
    futures: list[tuple[str, Future[JobHandle]]] = [
        (p, pool.submit(client.enqueue_call, call, pod=p)) for p in pods]
    handles: list[JobHandle] = []
    failed: dict[str, Exception] = {}
    for p, f in futures:
        try:
            handles.append(f.result())
        except PodjobsError as exc:
            failed[p] = exc
    if failed:
        raise FanOutIncomplete(handles, failed)
    return handles


def enqueue_all_pods(job: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """Enqueue the same job once on every active pod; one handle per pod (see `fan_out`)."""
    from podjobs.client import get_client

    client = get_client()
    if not isinstance(client, PodClient):
        raise ConfigurationError("enqueue_all_pods needs a pod-aware client: podjobs.configure(zk=...)")
    jd = getattr(job, "definition", job)
    return fan_out(client, jd.call(*args, **kwargs), client.router.active_pods())
