"""Pods and the tenant directory, kept in ZooKeeper.

1. Layout under the ZK root (JSON nodes):
       pods/{name}       {"name", "redis_url", "shard_url", "state": "active"|"draining"}
       tenants/{tenant}  {"pod", "state": "active"|"moving", "move": {...} (optional)}
2. `Pod`, `PodState`, `TenantEntry`, `TenantState`: the values, with their JSON form.
3. `TopologyStore(zk)`: the write side and direct reads: `add_pod`,
   `set_pod_state`, `pods`, `pod`, `assign`, `assign_many` (one ZooKeeper
   transaction per chunk), `where`, `tenant`, `tenants`, `set_tenant`
   (compare-and-set on the node version, for tenant moves).
4. `register_topology(zk, topology)`: put the pods of an `infra.topology.Topology`
   into ZooKeeper (used by `podjobs dev up`).
5. `Directory(zk)`: the read side, cached in memory and kept fresh by kazoo
   watches; `pod_of(tenant)` answers without a ZooKeeper round trip, also
   (stale) while ZooKeeper is unreachable, and catches up when it returns.
6. `validate_name`, `unknown_tenant`, `TopologyConflict`.

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

Directory cache (per tenant or pod node, driven by kazoo's `ChildrenWatch` on
tenants/ and pods/ and one `DataWatch` per node):

    absent --child appears, DataWatch reads it--> cached(version v)
    cached(v) --node data changes--> cached(v')      (Directory.version += 1)
    cached --node deleted--> absent
    any --ZooKeeper connection lost--> unchanged, answering stale (`stale` is True)
    stale --reconnected (same or new session)--> every watch re-reads its node
          and the cache catches up with what changed meanwhile

Kazoo's recipes re-establish themselves: on SUSPENDED kazoo drops all server
watches and fires each a NONE event, on which `DataWatch` re-reads its node
(waiting until a connection is back); on CONNECTED (also after a session
expired and a new one started) both recipes re-read. `ChildrenWatch` stops
for good if its parent node is deleted; `start()` creates both parents.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from kazoo.exceptions import KazooException
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from podjobs.errors import ConfigurationError, PodDraining, PodjobsError, UnknownPod, UnknownTenant

from .zk import ZK, BadVersionError, ConnState, NodeExistsError, NoNodeError, decode_json

if TYPE_CHECKING:
    from podjobs.infra.topology import Topology

log = logging.getLogger(__name__)

PODS = "pods"
TENANTS = "tenants"
# Creates per ZooKeeper transaction in assign_many (each ~100 bytes; the
# server's default request limit, jute.maxbuffer, is 1 MB).
ASSIGN_CHUNK = 500
# Bound on read-modify-write retries when another client writes the same pod node.
CAS_ATTEMPTS = 5
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class TopologyConflict(PodjobsError):  # type: ignore[misc,unused-ignore]
    """A write that would contradict ZooKeeper's current state (another writer
    won a compare-and-set, or a tenant already lives on another pod)."""


class PodState(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"


class TenantState(StrEnum):
    ACTIVE = "active"
    MOVING = "moving"


def validate_name(kind: str, name: str) -> str:
    """`name` if it is a valid tenant/pod/worker name, else `ConfigurationError`."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
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


@dataclass(frozen=True)
class Pod:
    """One pod: its queue Redis, its database shard, and whether it takes new tenants."""

    name: str
    redis_url: str
    shard_url: str
    state: PodState = PodState.ACTIVE

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "redis_url": self.redis_url,
            "shard_url": self.shard_url,
            "state": self.state.value,
        }

    @classmethod
    def from_json(cls, name: str, obj: dict[str, Any]) -> Pod:
        """From a pods/{name} node; `ValueError` if a field is missing or wrong."""
        try:
            return cls(
                name=name,
                redis_url=str(obj["redis_url"]),
                shard_url=str(obj["shard_url"]),
                state=PodState(obj.get("state", "active")),
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"pod node {name!r} is malformed ({exc!r}): {obj}") from exc


@dataclass(frozen=True)
class TenantEntry:
    """Where a tenant lives; `version` is the ZooKeeper node version (for `set_tenant`)."""

    tenant: str
    pod: str
    state: TenantState = TenantState.ACTIVE
    move: dict[str, Any] | None = field(default=None, hash=False)
    version: int = -1

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"pod": self.pod, "state": self.state.value}
        if self.move is not None:
            obj["move"] = self.move
        return obj

    def to_dict(self) -> dict[str, Any]:
        """The JSON form plus the tenant and version (for `--json` output)."""
        return {"tenant": self.tenant, **self.to_json(), "version": self.version}

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
                state=TenantState(obj.get("state", "active")),
                move=move,
                version=version,
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

    def _pod_path(self, name: str) -> str:
        return self.zk.path(PODS, name)

    def _tenant_path(self, tenant: str) -> str:
        return self.zk.path(TENANTS, tenant)

    # -- pods -------------------------------------------------------------------

    def add_pod(self, pod: Pod, replace: bool = False) -> bool:
        """Add a pod; True if ZooKeeper changed.

        Adding the same pod again does nothing. An existing pod with other URLs
        is refused (`ConfigurationError`) unless `replace=True`; its state is
        kept either way (change it with `set_pod_state`).
        """
        validate_name("pod", pod.name)
        for what, url in (("redis", pod.redis_url), ("shard", pod.shard_url)):
            if not url or not url.strip():
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
            if (old.redis_url, old.shard_url) == (pod.redis_url, pod.shard_url):
                return False
            if not replace:
                raise ConfigurationError(
                    f"pod {pod.name!r} already exists with redis {old.redis_url} and shard "
                    f"{old.shard_url}; to point it at redis {pod.redis_url} and shard "
                    f"{pod.shard_url} pass replace=True ('podjobs pods add --replace')"
                )
            new = Pod(pod.name, pod.redis_url, pod.shard_url, old.state)
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
            f"to put it on {pod!r} use 'podjobs tenants move {entry.tenant} {pod}', "
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
        """(entry, created) for a checked tenant and pod."""
        entry = TenantEntry(tenant, pod)
        for _ in range(CAS_ATTEMPTS):
            try:
                self.zk.create_json(self._tenant_path(tenant), entry.to_json())
                return replace(entry, version=0), True
            except NodeExistsError:
                pass
            existing = self.tenant(tenant)
            if existing is None:
                continue  # deleted meanwhile: create again
            if existing.pod != pod:
                raise self._refuse_reassign(existing, pod)
            return existing, False
        raise TopologyConflict(
            f"tenant {tenant!r} kept changing under us ({CAS_ATTEMPTS} attempts); try again"
        )

    def assign_many(
        self, assignments: Mapping[str, str], chunk: int = ASSIGN_CHUNK
    ) -> AssignSummary:
        """Assign many tenants (tenant -> pod), one ZooKeeper transaction per `chunk`.

        Everything is checked first (names, pods exist and are active, no tenant
        already on another pod) and nothing is written if any check fails.
        Tenants already on the requested pod are left as they are. If another
        writer creates some of these tenants between the checks and a chunk's
        transaction, that chunk is redone one tenant at a time with `assign`'s
        rules (a conflict found then leaves the tenants before it assigned).
        """
        for tenant, pod in assignments.items():
            validate_name("tenant", tenant)
            validate_name("pod", pod)
        pods = self.pods()
        for pod in sorted(set(assignments.values())):
            self._active_pod(pod, pods)
        existing_names = set(self.zk.children(self.zk.path(TENANTS)))
        to_check = [t for t in assignments if t in existing_names]
        current = self._read_tenants(to_check)
        unchanged: list[str] = []
        conflicts: list[str] = []
        for tenant in to_check:
            entry = current.get(tenant)
            if entry is None:
                continue  # deleted meanwhile: create it
            if entry.pod == assignments[tenant]:
                unchanged.append(tenant)
            else:
                conflicts.append(f"{tenant} (on {entry.pod}, asked {assignments[tenant]})")
        if conflicts:
            shown = ", ".join(conflicts[:10]) + (
                f" and {len(conflicts) - 10} more" if len(conflicts) > 10 else ""
            )
            raise TopologyConflict(
                f"{len(conflicts)} tenant(s) already live on another pod: {shown}; nothing was "
                f"assigned. Move them with 'podjobs tenants move TENANT POD' or leave them out"
            )
        skip = set(unchanged)
        todo = [(t, p) for t, p in assignments.items() if t not in skip]
        assigned: list[str] = []
        self.zk.ensure_path(self.zk.path(TENANTS))
        for i in range(0, len(todo), max(1, chunk)):
            part = todo[i : i + max(1, chunk)]
            items = [(self._tenant_path(t), TenantEntry(t, p).to_json()) for t, p in part]
            if self.zk.transaction_create(items) is None:
                assigned.extend(t for t, _ in part)
                continue
            # Someone else created some of these meanwhile: one at a time, same rules.
            for t, p in part:
                _, created = self._assign(t, p)
                (assigned if created else unchanged).append(t)
        return AssignSummary(assigned=assigned, unchanged=unchanged)

    def _read_tenants(self, tenants: list[str]) -> dict[str, TenantEntry]:
        paths = {self._tenant_path(t): t for t in tenants}
        out: dict[str, TenantEntry] = {}
        for path, got in self.zk.get_many_json(paths).items():
            try:
                if isinstance(got, ValueError):
                    raise got
                out[paths[path]] = TenantEntry.from_json(paths[path], got[0], got[1])
            except ValueError as exc:
                log.warning("skipping %s: %s", path, exc)
        return out

    def tenant(self, tenant: str) -> TenantEntry | None:
        """The tenant's entry, or None if it is not in the directory."""
        validate_name("tenant", tenant)
        got = self.zk.get_json(self._tenant_path(tenant))
        if got is None:
            return None
        return TenantEntry.from_json(tenant, got[0], got[1])

    def where(self, tenant: str) -> TenantEntry:
        """The tenant's entry; `UnknownTenant` (saying how to assign it) if none."""
        entry = self.tenant(tenant)
        if entry is None:
            raise unknown_tenant(tenant, self.pod_names())
        return entry

    def tenants(self, pod: str | None = None) -> list[TenantEntry]:
        """Every tenant entry (only those on `pod` if given), sorted by tenant."""
        if pod is not None:
            validate_name("pod", pod)
        names = self.zk.children(self.zk.path(TENANTS))
        entries = self._read_tenants(names)
        return [e for _, e in sorted(entries.items()) if pod is None or e.pod == pod]

    def set_tenant(self, entry: TenantEntry) -> TenantEntry:
        """Write an entry read earlier (compare-and-set on `entry.version`); returns the new one.

        `TopologyConflict` if the node changed since it was read,
        `UnknownTenant` if it does not exist, `UnknownPod` if `entry.pod` does
        not (a draining pod is allowed: tenants are moved off draining pods).
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
        try:
            version = self.zk.set_json(
                self._tenant_path(entry.tenant), entry.to_json(), version=entry.version
            )
        except NoNodeError:
            raise unknown_tenant(entry.tenant, self.pod_names()) from None
        except BadVersionError:
            now = self.tenant(entry.tenant)
            now_text = (
                f"version {now.version}, on {now.pod}, {now.state.value}" if now else "deleted"
            )
            raise TopologyConflict(
                f"tenant {entry.tenant!r} changed since version {entry.version} was read "
                f"(now {now_text}); read it again and retry"
            ) from None
        return replace(entry, version=version)


def register_topology(zk: ZK, topology: Topology, replace: bool = True) -> list[str]:
    """Add every pod of an `infra.topology.Topology`; returns the pods that changed.

    With `replace` (the default, for `podjobs dev up`, whose ports may change
    across restarts) a pod already registered with other URLs is updated.
    """
    store = TopologyStore(zk)
    changed = []
    for info in topology.pods:
        if store.add_pod(Pod(info.name, info.redis_url, info.shard_url), replace=replace):
            changed.append(info.name)
    return changed


Kind = Literal["pod", "tenant"]


@dataclass(frozen=True)
class Change:
    """One change the Directory applied: a pod or tenant node set or removed."""

    kind: Kind
    name: str
    removed: bool
    version: int


class Directory:
    """In-memory pods and tenants, kept fresh by ZooKeeper watches (see module doc).

    Reads never touch ZooKeeper and keep answering from the cache while it is
    unreachable (`stale` is then True). Thread-safe.

    Cost: one kazoo `DataWatch` (with its own session listener) per node. On
    every reconnect kazoo re-reads each node, from one short-lived thread per
    node; measured here: 500 tenants catch up in ~0.4 s, 5,000 tenants in ~3 s
    with ~5,000 threads started. Far beyond that, use fewer, bigger nodes.
    """

    def __init__(self, zk: ZK) -> None:
        self.zk = zk
        self._cond = threading.Condition(threading.RLock())
        self._pods: dict[str, Pod] = {}
        self._tenants: dict[str, TenantEntry] = {}
        # Latest child lists, and the token of the DataWatch that owns each name.
        self._names: dict[Kind, set[str]] = {"pod": set(), "tenant": set()}
        self._tokens: dict[Kind, dict[str, object]] = {"pod": {}, "tenant": {}}
        # The kazoo recipes themselves (DataWatch by token), released on removal and stop().
        self._watches: dict[object, Any] = {}
        self._children_watches: list[Any] = []
        self._version = 0
        self._listeners: list[Callable[[Change], None]] = []
        self._state = ConnState.LOST
        self._started = False
        self._stopped = False

    def __repr__(self) -> str:
        return f"Directory({self.zk!r}, pods={len(self._pods)}, tenants={len(self._tenants)})"

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> Directory:
        """Load every pod and tenant and watch them; returns once the cache is complete.

        Creates the pods/ and tenants/ parents if missing. While ZooKeeper is
        unreachable this waits (kazoo retries) rather than start with no data.
        """
        with self._cond:
            if self._started:
                raise ConfigurationError("Directory.start() was already called")
            self._started = True
            self._state = self.zk.state
        self.zk.add_listener(self._on_state)
        client = self.zk.client
        kinds: tuple[tuple[Kind, str], ...] = (("pod", PODS), ("tenant", TENANTS))
        for kind, parent in kinds:
            self.zk.ensure_path(self.zk.path(parent))
            # The first call happens here, synchronously: so does each new node's DataWatch.
            watch = ChildrenWatch(
                client, self.zk.path(parent), func=partial(self._on_children, kind)
            )
            self._children_watches.append(watch)
        return self

    def stop(self) -> None:
        """Stop updating and release every watch; reads keep answering the last values."""
        with self._cond:
            self._stopped = True
            watches = [*self._children_watches, *self._watches.values()]
            self._children_watches.clear()
            self._watches.clear()
            self._cond.notify_all()
        self.zk.remove_listener(self._on_state)
        for watch in watches:
            self._release(watch)

    def _release(self, watch: Any) -> None:
        """End a kazoo watch recipe now.

        Kazoo has no public way: a recipe ends when its function returns False,
        which only happens at its next event, and until then its session
        listener re-reads the node on every reconnect. This does what that
        return does (`_stopped`, drop the listener); the server-side watch is
        one-shot and goes at its next event.
        """
        watch._stopped = True
        listener = getattr(watch, "_session_watcher", None)
        if listener is not None:
            self.zk.client.remove_listener(listener)

    def __enter__(self) -> Directory:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reads --------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Bumped on every change applied to the cache."""
        return self._version

    @property
    def stale(self) -> bool:
        """True while not connected to ZooKeeper: answers may be out of date."""
        return self._state != ConnState.CONNECTED

    def pod_of(self, tenant: str) -> str:
        """The pod the tenant lives on (also while it is moving); `UnknownTenant` if none."""
        with self._cond:
            entry = self._tenants.get(tenant)
            if entry is None:
                raise unknown_tenant(tenant, list(self._pods))
            return entry.pod

    def tenant(self, tenant: str) -> TenantEntry | None:
        with self._cond:
            return self._tenants.get(tenant)

    def tenants(self) -> dict[str, TenantEntry]:
        with self._cond:
            return dict(self._tenants)

    def pods(self) -> dict[str, Pod]:
        with self._cond:
            return dict(sorted(self._pods.items()))

    def pod(self, name: str) -> Pod:
        with self._cond:
            pod = self._pods.get(name)
            if pod is None:
                raise unknown_pod(name, list(self._pods))
            return pod

    def wait_for(self, predicate: Callable[[Directory], bool], timeout: float) -> bool:
        """Block until `predicate(self)` holds (re-checked after each change); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def add_listener(self, cb: Callable[[Change], None]) -> None:
        """Call `cb(change)` after each change (in a kazoo thread: do not block)."""
        with self._cond:
            self._listeners.append(cb)

    def remove_listener(self, cb: Callable[[Change], None]) -> None:
        with self._cond:
            if cb in self._listeners:
                self._listeners.remove(cb)

    # -- watch callbacks (kazoo threads) -------------------------------------------

    def _on_state(self, state: ConnState) -> None:
        with self._cond:
            self._state = state
            self._cond.notify_all()

    def _cache(self, kind: Kind) -> dict[str, Any]:
        return self._pods if kind == "pod" else self._tenants

    def _path(self, kind: Kind, name: str) -> str:
        return self.zk.path(PODS if kind == "pod" else TENANTS, name)

    def _on_children(self, kind: Kind, children: list[str]) -> bool | None:
        if self._stopped:
            return False
        changes: list[Change] = []
        new: list[tuple[str, object]] = []
        with self._cond:
            names = set(children)
            self._names[kind] = names
            tokens = self._tokens[kind]
            cache = self._cache(kind)
            for name in [n for n in tokens if n not in names]:
                token = tokens.pop(name)
                gone = self._watches.pop(token, None)
                if gone is not None:
                    self._release(gone)
                if cache.pop(name, None) is not None:
                    changes.append(self._bump(kind, name, removed=True))
            for name in sorted(names - tokens.keys()):
                tokens[name] = token = object()
                new.append((name, token))
            self._cond.notify_all()  # membership changed, even if no cached value did
        self._notify(changes)
        self._preload(kind, new)
        self._watch_all(kind, new)
        return None

    def _preload(self, kind: Kind, new: list[tuple[str, object]]) -> None:
        """Read new nodes in one pipelined batch and cache them in one step.

        So a batch written together (`assign_many`'s transaction: one children
        event) appears in the cache together, and sooner than one watch at a
        time would make it. The watches set up next read the same versions
        and find nothing new.
        """
        if len(new) < 2:
            return
        wanted = {self._path(kind, name): (name, token) for name, token in new}
        try:
            got = self.zk.get_many_json(wanted)
        except KazooException as exc:
            log.warning(
                "could not preload %d %s nodes (%r); the watches will read them",
                len(new),
                kind,
                exc,
            )
            return
        changes: list[Change] = []
        with self._cond:
            cache = self._cache(kind)
            for path, item in got.items():
                name, token = wanted[path]
                if isinstance(item, ValueError) or self._tokens[kind].get(name) is not token:
                    continue
                if name in cache:
                    continue  # its watch was quicker
                try:
                    cache[name] = self._value(kind, name, *item)
                except ValueError:
                    continue  # the watch logs it
                changes.append(self._bump(kind, name, removed=False))
        self._notify(changes)

    def _watch_all(self, kind: Kind, new: list[tuple[str, object]]) -> None:
        """One DataWatch per new node; each reads its node once before returning.

        Those reads are synchronous, about 0.4 ms each (kazoo's per-request
        overhead, not the network): ~0.25 s for 500 tenants, ~2 s for 5,000;
        `_preload` has filled the cache before. Spreading them over threads
        was measured to gain little (the GIL).
        """
        client = self.zk.client
        for name, token in new:
            watch = DataWatch(
                client, self._path(kind, name), func=partial(self._on_data, kind, name, token)
            )
            with self._cond:
                current = not self._stopped and self._tokens[kind].get(name) is token
                if current:
                    self._watches[token] = watch
            if not current:
                self._release(watch)

    def _on_data(
        self, kind: Kind, name: str, token: object, data: bytes | None, stat: Any, event: Any = None
    ) -> bool | None:
        if self._stopped:
            return False
        changes: list[Change] = []
        keep: bool | None = None
        with self._cond:
            if self._tokens[kind].get(name) is not token:
                return False  # superseded: this node was removed (and maybe re-created)
            cache = self._cache(kind)
            value: Pod | TenantEntry | None = None
            if stat is not None:
                try:
                    value = self._parse(kind, name, data, int(stat.version))
                except ValueError as exc:
                    log.warning("ignoring %s: %s", self._path(kind, name), exc)
            elif name not in self._names[kind]:
                del self._tokens[kind][name]
                self._watches.pop(token, None)
                keep = False  # gone for good; a re-created node gets a new watch
            if value is None:
                if cache.pop(name, None) is not None:
                    changes.append(self._bump(kind, name, removed=True))
            elif cache.get(name) != value:
                cache[name] = value
                changes.append(self._bump(kind, name, removed=False))
        self._notify(changes)
        return keep

    def _parse(self, kind: Kind, name: str, data: bytes | None, version: int) -> Pod | TenantEntry:
        return self._value(kind, name, decode_json(data, self._path(kind, name)), version)

    @staticmethod
    def _value(kind: Kind, name: str, obj: dict[str, Any], version: int) -> Pod | TenantEntry:
        if kind == "pod":
            return Pod.from_json(name, obj)
        return TenantEntry.from_json(name, obj, version)

    def _bump(self, kind: Kind, name: str, removed: bool) -> Change:
        """Under the lock: count a change and wake `wait_for` callers."""
        self._version += 1
        self._cond.notify_all()
        return Change(kind, name, removed, self._version)

    def _notify(self, changes: list[Change]) -> None:
        if not changes:
            return
        with self._cond:
            listeners = list(self._listeners)
        for change in changes:
            for cb in listeners:
                try:
                    cb(change)
                except Exception:
                    log.exception("Directory listener %r failed on %s", cb, change)
