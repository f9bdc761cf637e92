"""The tenant directory, cached in memory and kept fresh by ZooKeeper watches.

`Directory(zk)`: `pod_of(tenant)` answers without a ZooKeeper round trip, also
(stale) while ZooKeeper is unreachable, and catches up when it returns.

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
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from podjobs.errors import ConfigurationError

from .topology import PODS, TENANTS, Pod, TenantEntry, unknown_pod, unknown_tenant
from .zk import ZK, ConnState, KazooException, Watch, decode_json

log = logging.getLogger(__name__)

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
        self._watches: dict[object, Watch] = {}
        self._children_watches: list[Watch] = []
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
        kinds: tuple[tuple[Kind, str], ...] = (("pod", PODS), ("tenant", TENANTS))
        for kind, parent in kinds:
            self.zk.ensure_path(self.zk.path(parent))
            # The first call happens here, synchronously: so does each new node's DataWatch.
            watch = self.zk.children_watch(self.zk.path(parent), partial(self._on_children, kind))
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

    @staticmethod
    def _release(watch: Watch) -> None:
        """End a watch recipe now (see `pods.zk.Watch.release`)."""
        watch.release()

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
        for name, token in new:
            watch = self.zk.data_watch(self._path(kind, name), partial(self._on_data, kind, name, token))
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
