"""Pods and the tenant directory, kept in ZooKeeper.

1. Layout under the ZK root (JSON nodes):
       pods/{name}       {"name", "redis_url", "shard_url", "state": "active"|"draining"}
       tenantdir/...     the tenants, in hashed bucket nodes (pods/buckets.py): each
                         tenant -> {"pod", "v", "state"?, "move"?}; plus the moves index
       tenants/{tenant}  the old layout (one node per tenant): only until
                         `podjobs tenants migrate-directory` (pods/migratedir.py)
2. `TenantEntry`, `TenantState`: the values, with their JSON form; `Pod` and `PodState`
   are infra.topofile's (one type for the topology file and ZooKeeper), re-exported.
3. `TopologyStore(zk)`: the write side and direct reads: `add_pod`,
   `set_pod_state`, `pods`, `pod`, `assign`, `assign_many` (one compare-and-set
   write per bucket touched), `where`, `tenant`, `tenants`, `tenants_named`,
   `remove_tenant`, `moving` (from the moves index), `set_tenant`
   (compare-and-set on the tenant's own version, for tenant moves).
4. `register_topology(zk, topology)`: put the pods of an `infra.topofile.Topology`
   into ZooKeeper (used by `podjobs dev up`).
5. `validate_name`, `unknown_tenant`, `TopologyConflict`.
The read side, cached and watched, is `Directory` in directory.py (re-exported here).

Pod states:

    (none) --add_pod--> ACTIVE --set_pod_state(draining)--> DRAINING
    DRAINING --set_pod_state(active)--> ACTIVE
    ACTIVE: takes new tenants and jobs.  DRAINING: keeps its tenants (they can
    be moved away), takes no new tenants (`assign` raises `PodDraining`).

Tenant states (the move itself is `podjobs tenants move`, built on `set_tenant`):

    (none) --assign(pod)--> ACTIVE on pod
    ACTIVE --set_tenant(state=moving, move={...}, CAS)--> MOVING (jobs held, not run)
    MOVING --set_tenant(pod=new, state=active, move=None, CAS)--> ACTIVE on new pod
    MOVING --set_tenant(state=active, move=None, CAS)--> ACTIVE on old pod (aborted)

"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Any

from podjobs.errors import ConfigurationError, PodDraining, PodjobsError, UnknownPod, UnknownTenant
from podjobs.infra.topofile import Pod as Pod
from podjobs.infra.topofile import PodState as PodState
from podjobs.quota import Quota

from .buckets import BucketStore, Entries, bucket_of, entry_json
from .zk import ZK, BadVersionError, NodeExistsError, NoNodeError

if TYPE_CHECKING:
    from podjobs.infra.topofile import Topology

log = logging.getLogger(__name__)

PODS = "pods"
TENANTS = "tenants"
# Buckets per pipelined round in assign_many.
ASSIGN_CHUNK = 256
# Bound on read-modify-write retries when another client writes the same pod node.
CAS_ATTEMPTS = 5
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


class TopologyConflict(PodjobsError):  # type: ignore[misc,unused-ignore]
    """A write that would contradict ZooKeeper's current state (another writer
    won a compare-and-set, or a tenant already lives on another pod)."""


class TenantState(StrEnum):
    ACTIVE = "active"
    MOVING = "moving"


def validate_name(kind: str, name: str) -> str:
    """`name` if it is a valid tenant/pod/worker name, else `ConfigurationError`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigurationError(
            f"{kind} name {name!r} is invalid: use 1-128 characters from letters, digits, "
            f"'.', '_' and '-' (and not '.' or '..')"
        )
    return name


def unknown_tenant(tenant: str, pod_names: list[str]) -> UnknownTenant:
    pods = ", ".join(sorted(pod_names)) or "none"
    return UnknownTenant(
        f"tenant {tenant!r} is not in the directory (pods: {pods}); "
        f"assign it with 'podjobs tenants assign {tenant} POD'"
    )


def unknown_pod(name: str, pod_names: list[str]) -> UnknownPod:
    pods = ", ".join(sorted(pod_names)) or "none"
    return UnknownPod(
        f"pod {name!r} is not in the topology (pods: {pods}); "
        f"add it with 'podjobs pods add {name} --redis URL --shard URL'"
    )


@dataclass(frozen=True, slots=True)
class TenantEntry:
    """Where a tenant lives; `version` is the tenant's own version in its bucket (0 when
    assigned, +1 per write; for `set_tenant`'s compare-and-set and the move fence)."""

    tenant: str
    pod: str
    state: TenantState = TenantState.ACTIVE
    move: dict[str, Any] | None = field(default=None, hash=False)
    version: int = -1
    #: the tenant's own quota, over its pod's default (podjobs.quota)
    quota: Quota | None = field(default=None, hash=False)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"pod": self.pod, "state": self.state.value}
        if self.move is not None:
            obj["move"] = self.move
        if self.quota is not None and self.quota.to_json():
            obj["quota"] = self.quota.to_json()
        return obj

    def to_dict(self) -> dict[str, Any]:
        """The JSON form plus the tenant and version (for `--json` output)."""
        return {"tenant": self.tenant, **self.to_json(), "version": self.version}

    def to_bucket(self) -> dict[str, Any]:
        """The compact form kept in the tenant's bucket node (pods/buckets.py)."""
        return entry_json(self.pod, self.state.value, self.move, self.version,
                          self.quota.to_json() if self.quota is not None else None)

    @classmethod
    def from_bucket(cls, tenant: str, obj: dict[str, Any]) -> TenantEntry:
        """From a bucket's entry; `ValueError` if it is malformed."""
        return cls.from_json(tenant, obj, int(obj.get("v", 0)))

    @classmethod
    def from_json(cls, tenant: str, obj: dict[str, Any], version: int) -> TenantEntry:
        """From a tenants/{tenant} node; `ValueError` if a field is missing or wrong."""
        try:
            move = obj.get("move")
            if move is not None and not isinstance(move, dict):
                raise ValueError(f"move must be an object, not {type(move).__name__}")
            return cls(
                tenant=tenant,
                pod=str(obj["pod"]),
                state=TenantState(obj.get("state", TenantState.ACTIVE)),
                move=move,
                version=version,
                quota=(Quota.from_json(obj["quota"], f"tenant {tenant}'s quota")
                       if obj.get("quota") else None),
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"tenant node {tenant!r} is malformed ({exc!r}): {obj}") from exc


@dataclass(frozen=True)
class AssignSummary:
    """What `assign_many` did: tenants newly assigned, and those already on that pod."""

    assigned: list[str]
    unchanged: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "assigned": len(self.assigned),
            "unchanged": len(self.unchanged),
            "tenants": self.assigned,
        }


class TopologyStore:
    """Reads and writes pods and tenant assignments in ZooKeeper (see module doc)."""

    def __init__(self, zk: ZK) -> None:
        self.zk = zk
        self.buckets = BucketStore(zk)

    def _pod_path(self, name: str) -> str:
        return self.zk.path(PODS, name)

    def pod_path(self, name: str) -> str:
        """The node of pod `name`, for a caller that reads it along with other nodes (one
        pipelined round); `Pod.from_json(name, obj)` makes the pod of what it holds."""
        validate_name("pod", name)
        return self._pod_path(name)

    # -- pods -------------------------------------------------------------------

    def add_pod(self, pod: Pod, replace: bool = False) -> bool:
        """Add a pod; True if ZooKeeper changed.

        Adding the same pod again does nothing. An existing pod with other URLs
        is refused (`ConfigurationError`) unless `replace=True`; its state is
        kept either way (change it with `set_pod_state`).
        """
        validate_name("pod", pod.name)
        for what, url in (("redis", pod.redis_url), ("shard", pod.shard_url)):
            if (not url or not url.strip()) and not (what == "redis" and pod.backend == "sql"):
                raise ConfigurationError(f"pod {pod.name!r} needs a {what} URL")
        path = self._pod_path(pod.name)
        for _ in range(CAS_ATTEMPTS):
            try:
                self.zk.create_json(path, pod.to_json())
                return True
            except NodeExistsError:
                pass
            current = self._read_pod(pod.name)
            if current is None:
                continue  # deleted meanwhile: create again
            old, version = current
            if (old.redis_url, old.shard_url, old.backend) == (pod.redis_url, pod.shard_url,
                                                               pod.backend):
                return False
            if not replace:
                raise ConfigurationError(
                    f"pod {pod.name!r} already exists with redis {old.redis_url} and shard "
                    f"{old.shard_url}; to point it at redis {pod.redis_url} and shard "
                    f"{pod.shard_url} pass replace=True ('podjobs pods add --replace')"
                )
            new = Pod(pod.name, pod.redis_url, pod.shard_url, old.state, backend=pod.backend,
                      quota=old.quota)
            try:
                self.zk.set_json(path, new.to_json(), version=version)
                return True
            except (BadVersionError, NoNodeError):
                continue
        raise TopologyConflict(
            f"pod {pod.name!r} kept changing under us ({CAS_ATTEMPTS} attempts); try again"
        )

    def _read_pod(self, name: str) -> tuple[Pod, int] | None:
        got = self.zk.get_json(self._pod_path(name))
        if got is None:
            return None
        obj, version = got
        return Pod.from_json(name, obj), version

    def set_pod_state(self, name: str, state: PodState | str) -> Pod:
        """Mark a pod active or draining; returns the pod as written."""
        try:
            new_state = PodState(state)
        except ValueError as exc:
            raise ConfigurationError(
                f"pod state {state!r} is not one of: {', '.join(s.value for s in PodState)}"
            ) from exc
        validate_name("pod", name)
        for _ in range(CAS_ATTEMPTS):
            current = self._read_pod(name)
            if current is None:
                raise unknown_pod(name, self.pod_names())
            old, version = current
            if old.state == new_state:
                return old
            new = replace(old, state=new_state)
            try:
                self.zk.set_json(self._pod_path(name), new.to_json(), version=version)
                return new
            except (BadVersionError, NoNodeError):
                continue
        raise TopologyConflict(
            f"pod {name!r} kept changing under us ({CAS_ATTEMPTS} attempts); try again"
        )

    def set_pod_quota(self, name: str, quota: Quota | None) -> Pod:
        """Set (None: clear) the default quota of a pod's tenants; returns the pod as written."""
        validate_name("pod", name)
        for _ in range(CAS_ATTEMPTS):
            current = self._read_pod(name)
            if current is None:
                raise unknown_pod(name, self.pod_names())
            old, version = current
            new = replace(old, quota=quota if quota is not None and quota.to_json() else None)
            try:
                self.zk.set_json(self._pod_path(name), new.to_json(), version=version)
                return new
            except (BadVersionError, NoNodeError):
                continue
        raise TopologyConflict(
            f"pod {name!r} kept changing under us ({CAS_ATTEMPTS} attempts); try again"
        )

    def set_tenant_quota(self, tenant: str, quota: Quota | None) -> TenantEntry:
        """Set (None: clear) a tenant's own quota; returns its entry as written."""
        for _ in range(CAS_ATTEMPTS):
            entry = self.where(tenant)
            try:
                return self.set_tenant(replace(
                    entry, quota=quota if quota is not None and quota.to_json() else None))
            except TopologyConflict:
                continue
        raise TopologyConflict(
            f"tenant {tenant!r} kept changing under us ({CAS_ATTEMPTS} attempts); try again"
        )

    def pod_names(self) -> list[str]:
        return self.zk.children(self.zk.path(PODS))

    def pods(self) -> dict[str, Pod]:
        """Every pod by name, sorted by name (malformed nodes are logged and skipped)."""
        paths = {self._pod_path(n): n for n in self.pod_names()}
        out: dict[str, Pod] = {}
        for path, got in self.zk.get_many_json(paths).items():
            try:
                if isinstance(got, ValueError):
                    raise got
                out[paths[path]] = Pod.from_json(paths[path], got[0])
            except ValueError as exc:
                log.warning("skipping %s: %s", path, exc)
        return dict(sorted(out.items()))

    def pod(self, name: str) -> Pod:
        """The pod called `name`; `UnknownPod` listing the known pods if none."""
        validate_name("pod", name)
        current = self._read_pod(name)
        if current is None:
            raise unknown_pod(name, self.pod_names())
        return current[0]

    # -- tenants ----------------------------------------------------------------

    def _active_pod(self, name: str, pods: Mapping[str, Pod] | None = None) -> Pod:
        """The pod if it exists and is active (`pods`: a listing already read, if any)."""
        if pods is None:
            pod = self.pod(name)
        elif name in pods:
            pod = pods[name]
        else:
            raise unknown_pod(name, list(pods))
        if pod.state != PodState.ACTIVE:
            listing = pods if pods is not None else self.pods()
            active = ", ".join(p.name for p in listing.values() if p.state == PodState.ACTIVE)
            raise PodDraining(
                f"pod {name!r} is draining and takes no new tenants; assign to an active pod "
                f"({active or 'none is active'}) or run 'podjobs pods set-state {name} active'"
            )
        return pod

    def _refuse_reassign(self, entry: TenantEntry, pod: str) -> TopologyConflict:
        return TopologyConflict(
            f"tenant {entry.tenant!r} is already on pod {entry.pod!r} (state {entry.state.value}); "
            f"to put it on {pod!r} use 'podjobs tenants move {entry.tenant} --to {pod}', "
            f"which moves its data and jobs"
        )

    def assign(self, tenant: str, pod: str) -> TenantEntry:
        """Put a new tenant on an active pod; returns its entry.

        Assigning it to the pod it is already on does nothing; assigning it to
        another pod is refused (`TopologyConflict`: that is a move).
        """
        validate_name("tenant", tenant)
        validate_name("pod", pod)
        self._active_pod(pod)
        return self._assign(tenant, pod)[0]

    def _assign(self, tenant: str, pod: str) -> tuple[TenantEntry, bool]:
        """(entry, created) for a checked tenant and pod: one bucket write (compare-and-set)."""

        def put(entries: Entries) -> tuple[TenantEntry, bool]:
            old = entries.get(tenant)
            if old is not None:
                existing = TenantEntry.from_bucket(tenant, old)
                if existing.pod != pod:
                    raise self._refuse_reassign(existing, pod)
                return existing, False
            entries[tenant] = TenantEntry(tenant, pod, version=0).to_bucket()
            return TenantEntry(tenant, pod, version=0), True

        return self.buckets.update(self.buckets.index(tenant), put)

    def assign_many(
        self, assignments: Mapping[str, str], chunk: int = ASSIGN_CHUNK
    ) -> AssignSummary:
        """Assign many tenants (tenant -> pod): one compare-and-set write per bucket touched.

        Everything is checked first (names, pods exist and are active, no tenant
        already on another pod) and nothing is written if any check fails.
        Tenants already on the requested pod are left as they are. If another
        writer puts one of these tenants on another pod between the checks and
        its bucket's write, that bucket's write is refused (`TopologyConflict`;
        the buckets written before it stay assigned). `chunk`: buckets per
        pipelined round (bounds memory at a million tenants).
        """
        for tenant, pod in assignments.items():
            validate_name("tenant", tenant)
            validate_name("pod", pod)
        pods = self.pods()
        for pod in sorted(set(assignments.values())):
            self._active_pod(pod, pods)
        by_bucket: dict[int, dict[str, str]] = {}
        n = self.buckets.buckets
        for tenant, pod in assignments.items():
            by_bucket.setdefault(bucket_of(tenant, n), {})[tenant] = pod
        order = sorted(by_bucket)
        rounds = [order[i : i + max(1, chunk)] for i in range(0, len(order), max(1, chunk))]
        # the checks first, over every bucket: a conflict writes nothing
        conflicts: list[str] = []
        for part in rounds:
            for i, (entries, _) in self.buckets.read_many(part).items():
                for tenant, pod in by_bucket[i].items():
                    old = entries.get(tenant)
                    if old is not None and str(old.get("pod")) != pod:
                        conflicts.append(f"{tenant} (on {old.get('pod')}, asked {pod})")
        if conflicts:
            shown = ", ".join(conflicts[:10]) + (
                f" and {len(conflicts) - 10} more" if len(conflicts) > 10 else ""
            )
            raise TopologyConflict(
                f"{len(conflicts)} tenant(s) already live on another pod: {shown}; nothing was "
                f"assigned. Move them with 'podjobs tenants move TENANT --to POD' or leave them out"
            )
        assigned: list[str] = []
        unchanged: list[str] = []
        for part in rounds:
            fns = {i: partial(self._put_many, by_bucket[i]) for i in part}
            for made, kept in self.buckets.update_many(fns).values():
                assigned.extend(made)
                unchanged.extend(kept)
        return AssignSummary(assigned=assigned, unchanged=unchanged)

    def _put_many(self, wanted: dict[str, str], entries: Entries) -> tuple[list[str], list[str]]:
        made: list[str] = []
        kept: list[str] = []
        for tenant, pod in wanted.items():
            old = entries.get(tenant)
            if old is None:
                entries[tenant] = TenantEntry(tenant, pod, version=0).to_bucket()
                made.append(tenant)
            elif str(old.get("pod")) == pod:
                kept.append(tenant)
            else:
                raise self._refuse_reassign(TenantEntry.from_bucket(tenant, old), pod)
        return made, kept

    def tenant(self, tenant: str) -> TenantEntry | None:
        """The tenant's entry, or None if it is not in the directory."""
        validate_name("tenant", tenant)
        entries, _ = self.buckets.read(self.buckets.index(tenant))
        obj = entries.get(tenant)
        return None if obj is None else TenantEntry.from_bucket(tenant, obj)

    def tenants_named(self, tenants: list[str]) -> dict[str, TenantEntry]:
        """The entries of these tenants (those in the directory), reading each bucket once."""
        n = self.buckets.buckets
        wanted: dict[int, list[str]] = {}
        for t in tenants:
            wanted.setdefault(bucket_of(t, n), []).append(t)
        out: dict[str, TenantEntry] = {}
        for i, (entries, _) in self.buckets.read_many(wanted).items():
            for t in wanted[i]:
                if t in entries:
                    out[t] = TenantEntry.from_bucket(t, entries[t])
        return out

    def where(self, tenant: str) -> TenantEntry:
        """The tenant's entry; `UnknownTenant` (saying how to assign it) if none."""
        entry = self.tenant(tenant)
        if entry is None:
            raise unknown_tenant(tenant, self.pod_names())
        return entry

    def tenants(self, pod: str | None = None) -> list[TenantEntry]:
        """Every tenant entry (only those on `pod` if given), sorted by tenant (reads every
        bucket: a listing, not for a request path)."""
        if pod is not None:
            validate_name("pod", pod)
        out: list[TenantEntry] = []
        n = self.buckets.buckets
        for start in range(0, n, 256):
            for entries, _ in self.buckets.read_many(range(start, min(n, start + 256))).values():
                for t, obj in entries.items():
                    if pod is None or obj.get("pod") == pod:
                        try:
                            out.append(TenantEntry.from_bucket(t, obj))
                        except ValueError as exc:
                            log.warning("skipping %s", exc)
        return sorted(out, key=lambda e: e.tenant)

    def remove_tenant(self, tenant: str) -> bool:
        """Take a tenant out of the directory (its jobs are left alone); False if absent."""
        validate_name("tenant", tenant)

        def drop(entries: Entries) -> bool:
            return entries.pop(tenant, None) is not None

        removed = self.buckets.update(self.buckets.index(tenant), drop)
        self.zk.delete(self.buckets.moves_path(tenant))
        return removed

    def set_tenant(self, entry: TenantEntry) -> TenantEntry:
        """Write an entry read earlier (compare-and-set on the tenant's version
        `entry.version`); returns the new one (version + 1).

        `TopologyConflict` if the entry changed since it was read,
        `UnknownTenant` if it does not exist, `UnknownPod` if `entry.pod` does
        not (a draining pod is allowed: tenants are moved off draining pods).
        Only this tenant's entry is compared: concurrent writes of other tenants
        of the same bucket are retried by `BucketStore.update`, not refused. A
        move is listed in the moves index before its entry says so, and leaves
        it after: the index is a superset of the moving tenants.
        """
        validate_name("tenant", entry.tenant)
        validate_name("pod", entry.pod)
        if entry.version < 0:
            raise ConfigurationError(
                f"set_tenant needs an entry read from ZooKeeper (with its version); "
                f"use assign() for the new tenant {entry.tenant!r}"
            )
        if self._read_pod(entry.pod) is None:
            raise unknown_pod(entry.pod, self.pod_names())
        index_path = self.buckets.moves_path(entry.tenant)
        if entry.move is not None:
            self.zk.ensure_path(index_path)

        def put(entries: Entries) -> TenantEntry:
            obj = entries.get(entry.tenant)
            if obj is None:
                raise unknown_tenant(entry.tenant, self.pod_names())
            now = TenantEntry.from_bucket(entry.tenant, obj)
            if now.version != entry.version:
                raise TopologyConflict(
                    f"tenant {entry.tenant!r} changed since version {entry.version} was read "
                    f"(now version {now.version}, on {now.pod}, {now.state.value}); read it "
                    f"again and retry"
                )
            new = replace(entry, version=entry.version + 1)
            entries[entry.tenant] = new.to_bucket()
            return new

        new = self.buckets.update(self.buckets.index(entry.tenant), put)
        if new.move is None:
            self.zk.delete(index_path)
        return new

    def moving(self) -> list[TenantEntry]:
        """Tenants with a move in progress, from the moves index (no scan of the directory)."""
        names = self.zk.children(self.buckets.moves_path())
        found = self.tenants_named(names)
        return [e for _, e in sorted(found.items()) if e.move]


def register_topology(zk: ZK, topology: Topology, replace: bool = True) -> list[str]:
    """Add every pod of an `infra.topofile.Topology`; returns the pods that changed.

    With `replace` (the default, for `podjobs dev up`, whose ports may change
    across restarts) a pod already registered with other URLs is updated.
    """
    store = TopologyStore(zk)
    changed = []
    for pod in topology.pods:
        if store.add_pod(pod, replace=replace):
            changed.append(pod.name)
    return changed
