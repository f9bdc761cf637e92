"""The tenant directory, cached in memory and kept fresh by ZooKeeper watches.

`Directory(zk)`: `pod_of(tenant)` answers without a ZooKeeper round trip once the
tenant's bucket is loaded, also (stale) while ZooKeeper is unreachable, and
catches up when it returns.

Cost (issue 17): a process pays for the buckets it uses, not for every tenant.
Tenants live in hashed bucket nodes (pods/buckets.py); a bucket is read, and
watched, the first time one of its tenants is asked for (`tenant`, `pod_of`),
or all at once by `tenants()` (listings). Pods (few) are all loaded at start.
Every tenant with a move in progress is loaded too, from the moves index
(one children watch), so a worker sees every move off its pod. A process
that never asks for a tenant (the scheduler) holds no tenant.

Watches are ZooKeeper's own one-shot watches, no kazoo recipe: one per loaded
bucket, one per pod, and one children watch each on pods/ and the moves index.
They all call one function that queues the path for the directory's one sync
thread, which re-reads it (leaving a new watch) and applies the difference.

    unloaded --first read of one of its tenants--> loaded(node version z)
    loaded(z) --watch: node changed--> loaded(z')   one `Change` per tenant that differs
    any --connection lost--> unchanged, answering stale (`stale` is True); kazoo
          drops every server watch
    stale --reconnected (same or new session)--> the sync thread watches every loaded
          node again (one pipelined `exists` each, no data) and re-reads those whose
          version moved meanwhile (one thread), then `stale` is False

The cache is bounded: at most `max_buckets` buckets (MAX_BUCKETS) stay loaded, the least
recently used dropped first (never one holding a moving tenant a worker follows). A dropped
bucket is forgotten with its watch: the sync thread ignores its watch when it fires (the
one-shot server watch is then gone; a reconnect drops it at once), and the next read of
one of its tenants loads it again. `tenants()` (listings) reads the buckets not loaded
without keeping or watching them.

    loaded(z) --least recently used, over max_buckets--> unloaded (its watch ignored)

A bucket not loaded while ZooKeeper is unreachable cannot be answered:
`tenant()` raises `DirectoryUnavailable` (a `BackendUnavailable`), at once when
disconnected, else after `load_timeout` seconds without an answer.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from podjobs.errors import BackendUnavailable, ConfigurationError, ServerUnreachable

from .buckets import MOVES, ROOT, bucket_name, bucket_of, decode_bucket, ensure_layout
from .topology import PODS, Pod, TenantEntry, unknown_pod, unknown_tenant
from .zk import ZK, ConnState, KazooException, decode_json

log = logging.getLogger(__name__)

Kind = Literal["pod", "tenant"]
#: seconds a first read of a bucket waits for ZooKeeper before giving up
LOAD_TIMEOUT = 10.0
#: buckets a process keeps loaded (and watched) at most: with the default 1,024 buckets,
#: a quarter of the directory (at 1M tenants ~250k entries; see README "Running across
#: machines")
MAX_BUCKETS = 256
#: the environment variable that sets `max_buckets` for every Directory of a process whose
#: constructor is not given one (workers, routers in an application, the API)
ENV_MAX_BUCKETS = "PODJOBS_DIRECTORY_BUCKETS"
_RESYNC = "resync"
_STOP = "stop"


def max_buckets_from_env(environ: dict[str, str] | None = None) -> int:
    """`$PODJOBS_DIRECTORY_BUCKETS`, else MAX_BUCKETS; a value that is not a whole number of
    1 or more is a `ConfigurationError` naming it."""
    raw = (os.environ if environ is None else environ).get(ENV_MAX_BUCKETS, "").strip()
    if not raw:
        return MAX_BUCKETS
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigurationError(
            f"{ENV_MAX_BUCKETS}={raw!r}: the tenant buckets a process keeps loaded must be a "
            f"whole number of 1 or more (default {MAX_BUCKETS}); unset it for the default")
    return n


class DirectoryUnavailable(BackendUnavailable):  # type: ignore[misc,unused-ignore]
    """A tenant's bucket is not loaded and ZooKeeper cannot be read now (exit code 4; the
    HTTP API answers 503): whether the tenant exists, and where, is unknown here."""


@dataclass(frozen=True)
class Change:
    """One change the Directory applied: a pod or tenant set or removed."""

    kind: Kind
    name: str
    removed: bool
    version: int


def _parse(raw: dict[str, dict[str, Any]], before: dict[str, TenantEntry]
           ) -> tuple[dict[str, TenantEntry], list[str]]:
    """A bucket's entries, and the tenants that differ from `before`. Every write of an entry
    bumps its "v", so an entry with the same pod and v as before is the same: it is kept
    as it was, not parsed again (a change to one tenant costs a dict pass, not 1,000 objects)."""
    entries: dict[str, TenantEntry] = {}
    differ: list[str] = []
    for t, obj in raw.items():
        old = before.get(t)
        if old is not None and old.version == obj.get("v", 0) and old.pod == obj.get("pod"):
            entries[t] = old
            continue
        entries[t] = e = TenantEntry.from_bucket(t, obj)
        if old != e:
            differ.append(t)
    return entries, differ


class Directory:
    """In-memory pods and the tenants of the buckets in use, kept fresh by watches
    (see module doc). Thread-safe."""

    def __init__(self, zk: ZK, *, follow_moves: bool = True,
                 load_timeout: float = LOAD_TIMEOUT, max_buckets: int | None = None) -> None:
        if max_buckets is None:
            max_buckets = max_buckets_from_env()
        if max_buckets < 1:
            raise ConfigurationError(
                f"max_buckets={max_buckets}: a directory keeps at least one bucket loaded; "
                f"give 1 or more")
        self.zk = zk
        #: load the buckets of every tenant in the moves index (workers need them)
        self.follow_moves = follow_moves
        self.load_timeout = load_timeout
        self.max_buckets = max_buckets
        self._cond = threading.Condition(threading.RLock())
        self._pods: dict[str, Pod] = {}
        self._pod_versions: dict[str, int] = {}
        #: bucket index -> (node version, its tenants); only loaded buckets are here, the
        #: least recently used first
        self._buckets: OrderedDict[int, tuple[int, dict[str, TenantEntry]]] = OrderedDict()
        #: buckets dropped from the cache (LRU), for tests and the bench
        self.evicted = 0
        self._n = 0
        self._moving_names: set[str] = set()
        self._version = 0
        self._listeners: list[Callable[[Change], None]] = []
        self._connected = False
        self._synced = False
        self._started = False
        self._stopped = False
        self._work: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._watcher = zk.watcher(self._on_event)
        self.resyncs = 0

    def __repr__(self) -> str:
        return (f"Directory({self.zk!r}, pods={len(self._pods)}, "
                f"buckets={len(self._buckets)}/{self._n}, tenants={self.loaded_tenants})")

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> Directory:
        """Load the pods (and the moving tenants) and watch them; the tenants' buckets load
        on first use. While ZooKeeper is unreachable this waits (kazoo retries)."""
        with self._cond:
            if self._started:
                raise ConfigurationError("Directory.start() was already called")
            self._started = True
        self.zk.ensure_path(self.zk.path(PODS))
        self._n = ensure_layout(self.zk)
        self.zk.add_listener(self._on_state)
        with self._cond:
            self._connected = self.zk.state == ConnState.CONNECTED
        self._sync_pods()
        if self.follow_moves:
            self._sync_moves()
        with self._cond:
            self._synced = True
        self._thread = threading.Thread(target=self._run, name="podjobs-directory", daemon=True)
        self._thread.start()
        self._warn_old_layout()
        return self

    def _warn_old_layout(self) -> None:
        stat = self.zk.stat(self.zk.path("tenants"))
        if stat is not None and stat.num_children:
            log.warning(
                "%d tenant(s) are still in the old one-node-per-tenant layout (%s) and are not "
                "seen by this process; run 'podjobs tenants migrate-directory'",
                stat.num_children, self.zk.path("tenants"))

    def stop(self) -> None:
        """Stop updating; reads keep answering the last values (server watches left fire
        once more, into nothing)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self.zk.remove_listener(self._on_state)
        self._work.put(_STOP)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def __enter__(self) -> Directory:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reads --------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Bumped on every change applied to the cache (a first load is no change)."""
        return self._version

    @property
    def stale(self) -> bool:
        """True while not connected to ZooKeeper or not caught up since: answers may be
        out of date."""
        return not (self._connected and self._synced)

    @property
    def buckets(self) -> int:
        return self._n

    @property
    def loaded_buckets(self) -> int:
        return len(self._buckets)

    @property
    def loaded_tenants(self) -> int:
        with self._cond:
            return sum(len(t) for _, t in self._buckets.values())

    def pod_of(self, tenant: str) -> str:
        """The pod the tenant lives on (also while it is moving); `UnknownTenant` if none."""
        entry = self.tenant(tenant)
        if entry is None:
            raise unknown_tenant(tenant, list(self._pods))
        return entry.pod

    def tenant(self, tenant: str) -> TenantEntry | None:
        """The tenant's entry (its bucket read and watched on first use), None if unknown."""
        b = bucket_of(tenant, self._n) if self._n else 0
        with self._cond:
            got = self._buckets.get(b)
            if got is not None:
                self._buckets.move_to_end(b)
        if got is None:
            self._load([b])
            got = self._buckets.get(b)
            if got is None:  # stopped before it loaded
                return None
        return got[1].get(tenant)

    def tenants(self) -> dict[str, TenantEntry]:
        """Every tenant, for listings (not request paths): the loaded buckets from memory,
        the others read in one pipelined round, neither kept nor watched."""
        with self._cond:
            out: dict[str, TenantEntry] = {}
            loaded = set(self._buckets)
            for _, entries in self._buckets.values():
                out.update(entries)
        rest = {self._path(i): i for i in range(self._n) if i not in loaded}
        if rest:
            if not self.zk.connected:
                raise DirectoryUnavailable(
                    f"the tenant directory cannot list {len(rest)} bucket(s) it has not "
                    f"loaded (ZooKeeper at {self.zk.hosts} is unreachable); retry when "
                    f"ZooKeeper is back")
            try:
                got = self.zk.read_watched(rest, None, self.load_timeout)
            except (ServerUnreachable, KazooException) as exc:
                raise DirectoryUnavailable(
                    f"the tenant directory cannot list {len(rest)} bucket(s) it has not "
                    f"loaded ({exc}); retry when ZooKeeper is back") from exc
            for path, item in got.items():
                if item is None:
                    continue
                try:
                    entries, _ = _parse(decode_bucket(item[0], path), {})
                except ValueError as exc:
                    log.warning("ignoring %s: %s", path, exc)
                    continue
                out.update(entries)
        return out

    def moving(self) -> dict[str, TenantEntry]:
        """The tenants of the moves index that are moving (loaded with the index)."""
        with self._cond:
            names = list(self._moving_names)
        out = {}
        for name in names:
            entry = self.tenant(name)
            if entry is not None and entry.move:
                out[name] = entry
        return out

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
        """Call `cb(change)` after each change (in the sync thread: do not block)."""
        with self._cond:
            self._listeners.append(cb)

    def remove_listener(self, cb: Callable[[Change], None]) -> None:
        with self._cond:
            if cb in self._listeners:
                self._listeners.remove(cb)

    # -- ZooKeeper events (kazoo threads: queue, never block) -----------------------

    def _on_state(self, state: ConnState) -> None:
        with self._cond:
            was = self._connected
            self._connected = state == ConnState.CONNECTED
            if not self._connected:
                self._synced = False
            self._cond.notify_all()
        if self._connected and not was:
            self._work.put(_RESYNC)  # kazoo dropped every watch: read everything again

    def _on_event(self, path: str, event: str) -> None:
        if path and not self._stopped:
            self._work.put(path)

    # -- the sync thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            items = {self._work.get()}
            try:
                while True:
                    items.add(self._work.get_nowait())
            except queue.Empty:
                pass
            if _STOP in items or self._stopped:
                return
            try:
                self._sync(items)
            except (KazooException, ServerUnreachable) as exc:
                # the connection went meanwhile: its return queues a resync
                log.info("directory sync interrupted (%r); catching up on reconnect", exc)
                if self.zk.state == ConnState.CONNECTED:
                    self._work.put(_RESYNC)
            except Exception:
                log.exception("directory sync failed; catching up on the next change")

    def _sync(self, items: set[str]) -> None:
        pods_root = self.zk.path(PODS)
        moves_root = self.zk.path(ROOT, MOVES)
        bucket_root = self.zk.path(ROOT, "b") + "/"
        if _RESYNC in items:
            with self._cond:
                if not self._connected:
                    return  # the next CONNECTED queues another
            self.resyncs += 1
            self._sync_pods()
            if self.follow_moves:
                self._sync_moves()
            self._catch_up()
            with self._cond:
                self._synced = self._connected
                self._cond.notify_all()
            return
        if pods_root in items:
            self._sync_pods()
        else:
            changed = [p.rsplit("/", 1)[1] for p in items if p.startswith(pods_root + "/")]
            if changed:
                self._read_pods(changed)
        if moves_root in items and self.follow_moves:
            self._sync_moves()
        buckets = [int(p[len(bucket_root):], 16) for p in items if p.startswith(bucket_root)]
        with self._cond:  # a dropped bucket's watch fired: not read again (nor watched)
            buckets = [b for b in buckets if b in self._buckets]
        if buckets:
            self._reload(buckets)

    def _catch_up(self) -> None:
        """After a reconnect: watch every loaded bucket again with one pipelined `exists`
        each (no data) and re-read only those whose node version moved meanwhile."""
        with self._cond:
            known = {self._path(i): (i, v) for i, (v, _) in self._buckets.items()}
        versions = self.zk.versions_watched(known, self._watcher)
        moved = [known[p][0] for p, v in versions.items() if v != known[p][1] and
                 not (v is None and known[p][1] < 0)]
        self._reload(moved)

    def _sync_pods(self) -> None:
        names = self.zk.children_watched(self.zk.path(PODS), self._watcher)
        changes: list[Change] = []
        with self._cond:
            for name in [n for n in self._pods if n not in names]:
                del self._pods[name]
                self._pod_versions.pop(name, None)
                changes.append(self._bump("pod", name, removed=True))
        self._notify(changes)
        self._read_pods(names)

    def _read_pods(self, names: list[str]) -> None:
        paths = {self.zk.path(PODS, n): n for n in names}
        got = self.zk.read_watched(paths, self._watcher, self.load_timeout)
        changes: list[Change] = []
        with self._cond:
            for path, item in got.items():
                name = paths[path]
                if item is None:
                    if self._pods.pop(name, None) is not None:
                        changes.append(self._bump("pod", name, removed=True))
                    continue
                if item[1] < self._pod_versions.get(name, -1):
                    continue  # an older read than the one cached
                try:
                    pod = Pod.from_json(name, decode_json(item[0], path))
                except ValueError as exc:
                    log.warning("ignoring %s: %s", path, exc)
                    continue
                self._pod_versions[name] = item[1]
                if self._pods.get(name) != pod:
                    self._pods[name] = pod
                    changes.append(self._bump("pod", name, removed=False))
        self._notify(changes)

    def _sync_moves(self) -> None:
        names = self.zk.children_watched(self.zk.path(ROOT, MOVES), self._watcher)
        with self._cond:
            new = set(names) - self._moving_names
            self._moving_names = set(names)
        wanted = {bucket_of(t, self._n) for t in names}
        self._load([b for b in wanted if b not in self._buckets])
        # A bucket loaded just now is no change, and one loaded before may have changed
        # before its watch fired: a tenant new in the index is announced either way, so a
        # worker re-checks it (listeners only read the current entry: once more is harmless).
        with self._cond:
            changes = [self._bump("tenant", t, removed=False) for t in sorted(new)
                       if self._buckets.get(bucket_of(t, self._n), (0, {}))[1].get(t)]
        self._notify(changes)

    def _path(self, index: int) -> str:
        return self.zk.path(ROOT, "b", bucket_name(index))

    def _load(self, indices: Iterable[int]) -> None:
        """First reads of buckets, from the calling thread (bounded by `load_timeout`)."""
        wanted = list(indices)
        if not wanted:
            return
        if self._stopped:
            return
        try:
            if not self.zk.connected:
                raise ServerUnreachable(f"ZooKeeper at {self.zk.hosts} is unreachable")
            self._reload(wanted, first=True)
        except (ServerUnreachable, KazooException) as exc:
            raise DirectoryUnavailable(
                f"the tenant directory cannot read {len(wanted)} bucket(s) it has not loaded "
                f"({exc}); retry when ZooKeeper is back") from exc

    def _reload(self, indices: list[int], first: bool = False) -> None:
        """Read buckets (leaving a watch on each) and apply what changed."""
        paths = {self._path(i): i for i in indices}
        timeout = self.load_timeout if first else None
        got = self.zk.read_watched(paths, self._watcher, timeout)
        changes: list[Change] = []
        with self._cond:
            for path, item in got.items():
                i = paths[path]
                version, raw = (-1, b"") if item is None else (item[1], item[0])
                old = self._buckets.get(i)
                if old is not None and version < old[0] and version >= 0:
                    continue  # a read older than the one cached
                before = old[1] if old is not None else {}
                try:
                    entries, differ = _parse(decode_bucket(raw, path), before)
                except ValueError as exc:
                    log.warning("ignoring %s: %s", path, exc)
                    continue
                if old is None and not first:
                    continue  # dropped from the cache meanwhile: stays dropped
                self._buckets[i] = (version, entries)
                if old is None:
                    continue  # a first load is no change
                for t in before.keys() - entries.keys():
                    changes.append(self._bump("tenant", t, removed=True))
                for t in differ:
                    changes.append(self._bump("tenant", t, removed=False))
            if first:
                self._evict()
            self._cond.notify_all()
        self._notify(changes)

    def _evict(self) -> None:
        """Under the lock: drop the least recently used buckets over `max_buckets`, keeping
        those that hold a tenant of the moves index (a worker must see its move)."""
        over = len(self._buckets) - self.max_buckets
        if over <= 0:
            return
        keep = ({bucket_of(t, self._n) for t in self._moving_names}
                if self.follow_moves and self._n else set())
        for i in [i for i in self._buckets if i not in keep][:over]:
            del self._buckets[i]
            self.evicted += 1

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
