"""A small typed wrapper over kazoo's `KazooClient` (kazoo itself is untyped).

1. `ZK(hosts, root, timeout, connection_retry, handshake_timeout)`: one ZooKeeper session whose
   paths live under `root` (default "/podjobs"); nothing connects until
   `start()`. `start(timeout)` raises `ConfigurationError` naming the hosts when
   ZooKeeper cannot be reached; `stop()` closes the session (its ephemeral
   nodes go at once).
2. `path(*parts)`: an absolute path under the root.
3. JSON nodes: `get_json` -> (object, version) or None, `set_json` (compare-
   and-set when a version is given), `create_json` (optionally ephemeral),
   `children`, `exists`, `delete`, `ensure_path`, `get_many_json` (many
   reads pipelined in one go, for listings and bulk checks) and
   `transaction_create` (many creates in one all-or-nothing transaction).
4. `add_listener(cb)` / `remove_listener(cb)`: `cb(ConnState)` on every
   connection state change (see the state machine below); `session_id`.
5. Typed wrappers of the kazoo pieces podjobs uses, so that nothing else imports
   kazoo (import-linter's `zk` contract): `stat(path)` -> `NodeStat` (version,
   ephemeral owner); `lock(path, identifier)` -> `Lock` (kazoo's Lock recipe:
   acquire, release, cancel, contenders, node); `transaction()` -> `Transaction`
   (check, create, set_data, delete, commit: all or nothing); `children_watch`
   / `data_watch` -> `Watch` (kazoo's recipes, with `release()` ending one now);
   kazoo's exceptions re-exported (`KazooException`, `NoNodeError`, ...).
   One-shot server watches without kazoo's recipes (no listener nor thread per
   node): `watcher(fn)` -> a `Watcher` (`fn(path, event)` in kazoo's event thread),
   `read_watched(paths, watcher)` (pipelined reads that leave a watch on each path,
   an exists-watch on a missing one), `children_watched(path, watcher)`,
   `write_many` (pipelined compare-and-set writes).
6. `parse_zk_spec("h1:p1,h2:p2/root/path")` and `zk_from_env(hosts, root)`:
   settings from flags or `$PODJOBS_ZK` ("host:port[,host:port...][/root]").

Connection states (kazoo's `KazooState`, as `ConnState`):

    LOST (not started) --start()--> CONNECTED
    CONNECTED --connection dropped--> SUSPENDED   (session may still be alive;
                                                   watches fire a NONE event)
    SUSPENDED --reconnected within the session timeout--> CONNECTED (same session)
    SUSPENDED --server says the session expired--> LOST   (ephemeral nodes and
                                                           server watches are gone)
    LOST --kazoo reconnects with a new session--> CONNECTED
    any --stop()--> LOST (final)

Kazoo reconnects by itself with `connection_retry` (default here: forever,
backing off 0.1 s doubling up to `RECONNECT_MAX_DELAY`; kazoo's own default
backs off up to an hour, which makes recovery after a long outage very slow).
A server's answer to the connection handshake is waited for at most
`handshake_timeout` (default `HANDSHAKE_TIMEOUT`, 2 s; kazoo's own wait is the
session timeout / number of hosts) and a handshake given up is retried after
0.1 s: a restarting ZooKeeper can leave a handshake unanswered (`_BoundedHandshake`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    LockTimeout,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.connection import ConnectionHandler
from kazoo.protocol.serialization import Connect
from kazoo.recipe.cache import TreeCache, TreeEvent
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.retry import KazooRetry

from podjobs.errors import ConfigurationError, ServerUnreachable

log = logging.getLogger(__name__)
# Kazoo's client logs every failed connect attempt as a WARNING; with no logging
# configured Python would print those on stderr before our one-line error. A
# NullHandler keeps them out of CLI output; configured handlers still get them.
kazoo_log = logging.getLogger("podjobs.kazoo")
kazoo_log.addHandler(logging.NullHandler())

ENV_ZK = "PODJOBS_ZK"
DEFAULT_ROOT = "/podjobs"
# Seconds: the longest pause between two reconnect attempts.
RECONNECT_MAX_DELAY = 2.0
# Seconds: default session timeout asked of the server (it clamps it to its min/max).
DEFAULT_SESSION_TIMEOUT = 10.0
# Seconds: the longest wait for a server's answer to the connection handshake (kazoo, like
# ZooKeeper's Java client, waits session timeout / number of hosts: the whole session with
# one host). See `_BoundedHandshake`.
HANDSHAKE_TIMEOUT = 2.0
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?")

__all__ = [
    "BadVersionError",
    "ConnState",
    "DEFAULT_ROOT",
    "ENV_ZK",
    "KazooException",
    "Lock",
    "LockTimeout",
    "NoNodeError",
    "NodeExistsError",
    "NodeStat",
    "NotEmptyError",
    "RolledBackError",
    "Transaction",
    "Watch",
    "Watcher",
    "ZK",
    "decode_json",
    "parse_zk_spec",
    "reconnect_retry",
    "zk_from_env",
]


class ConnState(StrEnum):
    """Connection state as seen by listeners (see the module docstring)."""

    CONNECTED = "CONNECTED"
    SUSPENDED = "SUSPENDED"
    LOST = "LOST"


def reconnect_retry(max_delay: float = RECONNECT_MAX_DELAY) -> KazooRetry:
    """A reconnect policy: try forever, 0.1 s doubling up to `max_delay` seconds."""
    return KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_jitter=0.2, max_delay=max_delay)


# -- kazoo private names: the bounded handshake -----------------------------------------
# The one place that relies on kazoo's ConnectionHandler internals (`KazooClient._connection`,
# `ConnectionHandler._invoke` and `_connect_attempt(host, hostip, port, retry)`, the
# `retry.reset()` of kazoo's connect loop). tests/test_topology.py's handshake tests fail if
# kazoo changes them (a silent server must be given up after `handshake_timeout`).


class _BoundedHandshake(ConnectionHandler):  # type: ignore[misc]
    """kazoo's connection handler, but the reply to the handshake (the Connect request) is
    waited for at most `handshake_timeout` seconds, and a handshake given up is retried after
    the first reconnect delay (0.1 s +-20%), not after the grown backoff: the wait itself was
    the pause, and the server was there (it accepted the connection).

    Why: a standalone ZooKeeper (3.8, 3.9) that is starting accepts connections before its
    database is loaded; a connection closed then ("ZooKeeperServer not running") can hit a
    NullPointerException in `ZooKeeperServer.removeCnxn` (`zkDb` is still null, upstream
    ZOOKEEPER-5051), which skips closing the socket: the client's handshake is never
    answered. kazoo would wait the whole session timeout (one host) and find its session
    expired. Reconnecting after a dropped connection is unchanged (one host: kazoo's
    backoff), so two clients of one session do not take it from each other in a loop."""

    handshake_timeout = HANDSHAKE_TIMEOUT
    _handshake_timed_out = False

    def _invoke(self, timeout: float, request: Any, xid: int | None = None) -> Any:
        if not isinstance(request, Connect):
            return super()._invoke(timeout, request, xid)
        try:
            return super()._invoke(min(timeout, self.handshake_timeout), request, xid)
        except self.handler.timeout_exception:
            self._handshake_timed_out = True
            raise

    def _connect_attempt(self, host: str, hostip: str, port: int, retry: Any) -> Any:
        self._handshake_timed_out = False
        status = super()._connect_attempt(host, hostip, port, retry)
        if self._handshake_timed_out:
            retry.reset()
        return status


def _bound_handshake(client: KazooClient, seconds: float) -> None:
    """Make `client`'s connection a `_BoundedHandshake` waiting `seconds` for a handshake."""
    conn = client._connection
    if type(conn) is not ConnectionHandler or not all(
        callable(getattr(conn, name, None)) for name in ("_invoke", "_connect_attempt")
    ):
        raise RuntimeError(
            f"kazoo's connection handler changed ({type(conn).__name__}): "
            "pods/zk.py's _BoundedHandshake needs updating")
    conn.__class__ = _BoundedHandshake
    conn.handshake_timeout = seconds


def _join(*parts: str) -> str:
    segs = [s for p in parts for s in p.split("/") if s]
    return "/" + "/".join(segs)


def decode_json(raw: bytes | None, where: str) -> dict[str, Any]:
    """The JSON object in a node's data; `ValueError` naming `where` if it is not one."""
    try:
        obj = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"ZooKeeper node {where} does not hold JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"ZooKeeper node {where} holds {type(obj).__name__}, not a JSON object")
    return obj


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class NodeStat:
    """What podjobs reads of a node's kazoo `ZnodeStat`."""

    version: int
    #: the session id holding an ephemeral node (0 for a persistent node)
    ephemeral_owner: int
    #: how many children the node has
    num_children: int = 0


class Lock:
    """kazoo's `Lock` recipe (sequential contender nodes under `path`), typed.

    `acquire(timeout)`: True once held, False when `blocking` is off and it is taken,
    `LockTimeout` after `timeout` seconds (None: wait for ever; `cancel()` from another
    thread ends the wait). `node`: our contender node's name once acquired (its sequence
    number is the holder's fencing token)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    @property
    def path(self) -> str:
        return str(self._raw.path)

    @property
    def node(self) -> str | None:
        node = self._raw.node
        return None if node is None else str(node)

    def acquire(self, timeout: float | None = None, blocking: bool = True) -> bool:
        return bool(self._raw.acquire(blocking=blocking, timeout=timeout))

    def release(self) -> bool:
        return bool(self._raw.release())

    def cancel(self) -> None:
        self._raw.cancel()

    def contenders(self) -> list[str]:
        """The identifiers of every contender, the holder first."""
        return [str(c) for c in self._raw.contenders()]


class Transaction:
    """A kazoo transaction: operations collected, then `commit()` applies all or none.

    `commit()` returns one result per operation, in order: the created path, the new
    `ZnodeStat`, True, or the exception the server gave (the first refused operation's
    own, `RolledBackError` for every other)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def check(self, path: str, version: int) -> None:
        self._raw.check(path, version)

    def create(self, path: str, value: bytes = b"", ephemeral: bool = False) -> None:
        self._raw.create(path, value, ephemeral=ephemeral)

    def set_data(self, path: str, value: bytes, version: int = -1) -> None:
        self._raw.set_data(path, value, version=version)

    def delete(self, path: str, version: int = -1) -> None:
        self._raw.delete(path, version=version)

    def commit(self) -> list[Any]:
        return list(self._raw.commit())


class Watch:
    """A kazoo watch recipe (`ChildrenWatch` or `DataWatch`) that `release()` ends now.

    Kazoo has no public way: a recipe ends when its function returns False, which only
    happens at its next event, and until then its session listener re-reads the node on
    every reconnect. `release()` does what that return does (`_stopped`, drop the
    listener); the server-side watch is one-shot and goes at its next event."""

    def __init__(self, raw: Any, client: Any) -> None:
        self._raw = raw
        self._client = client

    def release(self) -> None:
        self._raw._stopped = True
        listener = getattr(self._raw, "_session_watcher", None)
        if listener is not None:
            self._client.remove_listener(listener)


class Watcher:
    """A one-shot server watch callback, made once by `ZK.watcher(fn)` and passed to every
    watched read: kazoo keeps one entry per (path, callback), so reading a path again
    with the same `Watcher` leaves one watch, not two. `fn(path, event)` runs in kazoo's
    event thread (do not block, do not call ZooKeeper); `event` is "created", "deleted",
    "changed", "child", or "none" (the connection dropped: kazoo forgot every watch, and
    the path is "")."""

    def __init__(self, fn: Callable[[str, str], None]) -> None:
        self.fn = fn

    def __call__(self, event: Any) -> None:
        self.fn(str(event.path or ""), str(event.type).lower())
class Mirror:
    """A subtree kept in memory by kazoo's TreeCache recipe (one watch per node of the subtree,
    re-synced by the recipe after a reconnect): `children` and `get_json` answer from memory
    while `fresh` (loaded, and the connection not suspended since), else None: the caller
    reads ZooKeeper itself. For small subtrees a leader reads every pass (run records, pods),
    not for tenants."""

    def __init__(self, client: Any, path: str) -> None:
        self.path = path
        self._ready = threading.Event()
        self._cache = TreeCache(client, path)
        self._cache.listen(self._on_event)
        self._cache.start()

    def _on_event(self, event: Any) -> None:
        if event.event_type in (TreeEvent.INITIALIZED, TreeEvent.CONNECTION_RECONNECTED):
            self._ready.set()
        elif event.event_type in (TreeEvent.CONNECTION_SUSPENDED, TreeEvent.CONNECTION_LOST):
            self._ready.clear()

    @property
    def fresh(self) -> bool:
        return self._ready.is_set()

    def children(self, path: str) -> list[str] | None:
        if not self.fresh:
            return None
        return sorted(self._cache.get_children(path, frozenset()))

    def get_json(self, path: str) -> tuple[dict[str, Any], int] | None:
        """The node's JSON and version from memory; None when missing (or not fresh)."""
        if not self.fresh:
            return None
        got = self._cache.get_data(path)
        if got is None or got.data is None:
            return None
        return decode_json(got.data, path), int(got.stat.version)

    def close(self) -> None:
        self._cache.close()


class ZK:
    """One ZooKeeper session with JSON helpers under a root path (see module doc)."""

    def __init__(
        self,
        hosts: str,
        root: str = DEFAULT_ROOT,
        timeout: float = DEFAULT_SESSION_TIMEOUT,
        connection_retry: KazooRetry | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        hosts = hosts.strip()
        if not hosts or not all(_HOST_PORT.fullmatch(h.strip()) for h in hosts.split(",")):
            raise ConfigurationError(
                f"ZooKeeper address {hosts!r} is not 'host:port[,host:port...]' "
                f"(a root path goes into root=, or after the hosts in {ENV_ZK})"
            )
        self.hosts = hosts
        self.root = _join(root) if root.strip("/") else "/"
        self.timeout = timeout
        self._client = KazooClient(
            hosts=hosts,
            timeout=timeout,
            connection_retry=connection_retry or reconnect_retry(),
            logger=kazoo_log,
        )
        # kazoo's own wait (session / hosts) when it is the shorter one.
        _bound_handshake(self._client, min(handshake_timeout, timeout / len(hosts.split(","))))
        self._listeners: dict[Callable[[ConnState], None], Callable[[Any], None]] = {}

    def __repr__(self) -> str:
        return f"ZK({self.hosts!r}, root={self.root!r})"

    # -- session -------------------------------------------------------------

    @property
    def kazoo_client(self) -> Any:
        """The raw `kazoo.client.KazooClient`, for tests only (expiring a session, counting
        listeners): podjobs itself goes through the typed methods above and below."""
        return self._client

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    @property
    def state(self) -> ConnState:
        return ConnState(str(self._client.state))

    @property
    def session_id(self) -> int | None:
        """The current session id, or None while not connected."""
        cid = self._client.client_id
        return int(cid[0]) if cid else None

    def start(self, timeout: float = 10.0) -> ZK:
        """Connect (waiting up to `timeout` seconds); returns self.

        Raises `ServerUnreachable` (a `ConfigurationError`) naming the hosts if no server
        answered.
        """
        try:
            self._client.start(timeout=timeout)
        except KazooTimeoutError as exc:
            self._client.stop()
            self._client.close()
            raise ServerUnreachable(
                f"cannot reach ZooKeeper at {self.hosts} within {timeout:g}s; "
                f"start it with 'podjobs dev up' or set {ENV_ZK} (or --zk) to a "
                f"running ZooKeeper"
            ) from exc
        return self

    def stop(self) -> None:
        """Close the session (ephemeral nodes are deleted) and free the client (idempotent)."""
        self._client.stop()
        self._client.close()

    def __enter__(self) -> ZK:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_listener(self, cb: Callable[[ConnState], None]) -> None:
        """Call `cb(state)` on each connection state change.

        It runs in kazoo's connection thread: it must not block and must not
        call ZooKeeper (hand work to a thread instead).
        """

        def listener(state: Any) -> None:
            cb(ConnState(str(state)))

        self._listeners[cb] = listener
        self._client.add_listener(listener)

    def remove_listener(self, cb: Callable[[ConnState], None]) -> None:
        listener = self._listeners.pop(cb, None)
        if listener is not None:
            self._client.remove_listener(listener)

    # -- paths and nodes -------------------------------------------------------

    def path(self, *parts: str) -> str:
        """An absolute path under the root: `path("tenants", "t1")` -> "/podjobs/tenants/t1"."""
        return _join(self.root, *parts)

    def exists(self, path: str) -> bool:
        return self._client.exists(path) is not None

    def ensure_path(self, path: str) -> None:
        self._client.ensure_path(path)

    def ensure_many(self, paths: Iterable[str]) -> None:
        """`ensure_path` for many paths with pipelined creates (one round trip's latency
        when their parents exist, not two round trips each)."""
        pending = [(p, self._client.create_async(p, b"", makepath=True)) for p in paths]
        for _, res in pending:
            try:
                res.get()
            except NodeExistsError:
                pass

    def stat(self, path: str) -> NodeStat | None:
        """The node's version and ephemeral owner, or None if it does not exist."""
        st = self._client.exists(path)
        return None if st is None else NodeStat(int(st.version), int(st.ephemeralOwner),
                                             int(st.numChildren))

    def get_json(self, path: str) -> tuple[dict[str, Any], int] | None:
        """(object, version) of a JSON node, or None if it does not exist."""
        try:
            raw, stat = self._client.get(path)
        except NoNodeError:
            return None
        return decode_json(raw, path), int(stat.version)

    def get_many_json(
        self, paths: Iterable[str]
    ) -> dict[str, tuple[dict[str, Any], int] | ValueError]:
        """Read many JSON nodes with pipelined requests (one round trip's latency, not N).

        Returns path -> (object, version); missing nodes are left out, and a
        node that does not hold a JSON object maps to the `ValueError` saying so.
        """
        pending = [(p, self._client.get_async(p)) for p in paths]
        out: dict[str, tuple[dict[str, Any], int] | ValueError] = {}
        for p, res in pending:
            try:
                raw, stat = res.get()
            except NoNodeError:
                continue
            try:
                out[p] = (decode_json(raw, p), int(stat.version))
            except ValueError as exc:
                out[p] = exc
        return out

    def set_json(self, path: str, obj: dict[str, Any], version: int | None = None) -> int:
        """Write a JSON node; returns its new version.

        With `version`, only if the node is still at that version
        (`BadVersionError` otherwise). `NoNodeError` if it does not exist.
        """
        stat = self._client.set(path, _encode(obj), version=-1 if version is None else version)
        return int(stat.version)

    def create_json(
        self,
        path: str,
        obj: dict[str, Any],
        ephemeral: bool = False,
        makepath: bool = True,
    ) -> str:
        """Create a JSON node (`NodeExistsError` if it exists); returns its path."""
        return str(self._client.create(path, _encode(obj), ephemeral=ephemeral, makepath=makepath))

    def children(self, path: str) -> list[str]:
        """Sorted child names; [] if the node does not exist."""
        try:
            return sorted(self._client.get_children(path))
        except NoNodeError:
            return []

    def mirror(self, path: str) -> Mirror:
        """A `Mirror` of the subtree at `path` (started; `close()` it)."""
        return Mirror(self._client, path)

    def children_many(self, paths: Iterable[str]) -> dict[str, list[str]]:
        """The children of many nodes with pipelined requests (one round trip's latency, not
        N); a missing node maps to []."""
        pending = [(p, self._client.get_children_async(p)) for p in paths]
        out: dict[str, list[str]] = {}
        for p, res in pending:
            try:
                out[p] = sorted(res.get())
            except NoNodeError:
                out[p] = []
        return out

    def delete(self, path: str, recursive: bool = False, version: int | None = None) -> bool:
        """Delete a node (and its subtree if `recursive`); False if it did not exist."""
        try:
            if recursive:
                self._client.delete(path, recursive=True)
            else:
                self._client.delete(path, version=-1 if version is None else version)
        except NoNodeError:
            return False
        return True

    def transaction(self) -> Transaction:
        """An empty transaction (see `Transaction`)."""
        return Transaction(self._client.transaction())

    def lock(self, path: str, identifier: str = "", path_exists: bool = False) -> Lock:
        """kazoo's Lock recipe on `path` (see `Lock`); `identifier` names the contender.
        `path_exists`: the caller saw `path` exist (a lock it took before), so the recipe's
        round trip that makes sure of it is left out; `acquire` raises `NoNodeError` if the
        node went away since."""
        raw = self._client.Lock(path, identifier)
        if path_exists:
            raw.assured_path = True
        return Lock(raw)

    def children_watch(self, path: str, func: Callable[[list[str]], bool | None]) -> Watch:
        """kazoo's `ChildrenWatch`: `func(children)` now (synchronously) and after each
        change of the children, in a kazoo thread, until it returns False or the watch is
        released."""
        return Watch(ChildrenWatch(self._client, path, func=func), self._client)

    def data_watch(self, path: str, func: Callable[..., bool | None]) -> Watch:
        """kazoo's `DataWatch`: `func(data, stat, event)` now (synchronously) and after each
        change of the node, in a kazoo thread, until it returns False or the watch is
        released."""
        return Watch(DataWatch(self._client, path, func=func), self._client)

    def watcher(self, fn: Callable[[str, str], None]) -> Watcher:
        """A `Watcher` for `read_watched` / `children_watched` (see `Watcher`)."""
        return Watcher(fn)

    def read_watched(
        self, paths: Iterable[str], watcher: Watcher | None, timeout: float | None = None
    ) -> dict[str, tuple[bytes, int] | None]:
        """Read many nodes pipelined, leaving a one-shot watch on each (unless `watcher` is
        None): path -> (data, version), or None for a missing node (an exists-watch then
        reports its creation).

        Raises kazoo's error (`ConnectionLoss`, ...) if a read fails, and
        `ServerUnreachable` if `timeout` seconds pass first."""
        pending = [(p, self._client.get_async(p, watch=watcher)) for p in paths]
        out: dict[str, tuple[bytes, int] | None] = {}
        missing: list[str] = []
        for p, res in pending:
            try:
                raw, stat = self._result(res, timeout)
            except NoNodeError:
                missing.append(p)
                continue
            out[p] = (raw or b"", int(stat.version))
        if watcher is None:
            out.update((p, None) for p in missing)
            return out
        for p, res in [(p, self._client.exists_async(p, watch=watcher)) for p in missing]:
            stat = self._result(res, timeout)
            # created between the two reads: read it (its data watch reports later changes)
            out[p] = None if stat is None else self.read_watched([p], watcher, timeout)[p]
        return out

    def versions_watched(
        self, paths: Iterable[str], watcher: Watcher, timeout: float | None = None
    ) -> dict[str, int | None]:
        """Pipelined `exists` with a watch on each path (it reports creation, deletion and
        data changes): path -> node version, or None if missing. Cheap: no data comes back."""
        pending = [(p, self._client.exists_async(p, watch=watcher)) for p in paths]
        out: dict[str, int | None] = {}
        for p, res in pending:
            stat = self._result(res, timeout)
            out[p] = None if stat is None else int(stat.version)
        return out

    def _result(self, res: Any, timeout: float | None) -> Any:
        try:
            return res.get(timeout=timeout)
        except KazooTimeoutError as exc:
            raise ServerUnreachable(
                f"ZooKeeper at {self.hosts} did not answer within {timeout:g}s") from exc

    def children_watched(self, path: str, watcher: Watcher) -> list[str]:
        """The children of `path` (sorted), leaving a one-shot child watch on it."""
        return sorted(self._client.get_children(path, watch=watcher))

    def write_many(
        self, writes: list[tuple[str, bytes, int]]
    ) -> dict[str, int | Exception]:
        """Pipelined compare-and-set writes (path, data, version; -1: any; version -2:
        create the node): path -> new version, or the error (`BadVersionError`,
        `NodeExistsError`, ...) for that path."""
        pending = []
        for path, data, version in writes:
            if version == -2:
                pending.append((path, self._client.create_async(path, data, makepath=True), True))
            else:
                pending.append((path, self._client.set_async(path, data, version=version), False))
        out: dict[str, int | Exception] = {}
        for path, res, created in pending:
            try:
                got = res.get()
                out[path] = 0 if created else int(got.version)
            except KazooException as exc:
                out[path] = exc
        return out

    def delete_many(self, items: list[tuple[str, int]]) -> dict[str, Exception | None]:
        """Pipelined deletes of (path, version; -1: any): path -> None, or the error
        (`BadVersionError`, `NoNodeError`, ...)."""
        pending = [(p, self._client.delete_async(p, version=v)) for p, v in items]
        out: dict[str, Exception | None] = {}
        for p, res in pending:
            try:
                res.get()
                out[p] = None
            except KazooException as exc:
                out[p] = exc
        return out

    def transaction_create(self, items: list[tuple[str, dict[str, Any]]]) -> Exception | None:
        """Create `items` atomically; None on success, else the first node's error.

        The error is kazoo's exception for the first operation the server
        refused (`NodeExistsError`, `NoNodeError`); every other operation in
        the transaction reports `RolledBackError` and nothing was written.
        """
        txn = self.transaction()
        for path, obj in items:
            txn.create(path, _encode(obj))
        results = txn.commit()
        for r in results:
            if isinstance(r, Exception) and not isinstance(r, RolledBackError):
                return r
        return None


def parse_zk_spec(spec: str) -> tuple[str, str | None]:
    """("host:port,...", root or None) from "host:port[,host:port...][/root/path]"."""
    spec = spec.strip()
    hosts, slash, root = spec.partition("/")
    if not hosts:
        raise ConfigurationError(
            f"ZooKeeper address {spec!r} names no host; expected 'host:port[,host:port...][/root]'"
        )
    return hosts, (_join(root) if slash and root.strip("/") else None)


def zk_from_env(
    hosts: str | None = None,
    root: str | None = None,
    timeout: float = DEFAULT_SESSION_TIMEOUT,
) -> ZK:
    """A `ZK` (not started) from `hosts` (a flag value) or `$PODJOBS_ZK`.

    Either may carry a root ("h:p/root"); `root` overrides it; the default root
    is "/podjobs". `ConfigurationError` if neither gives an address.
    """
    spec = hosts or os.environ.get(ENV_ZK)
    if not spec:
        raise ConfigurationError(
            f"no ZooKeeper address: pass --zk HOST:PORT[/root] or set {ENV_ZK} "
            f"(for example {ENV_ZK}=127.0.0.1:2181/podjobs); 'podjobs dev up' starts one"
        )
    addr, spec_root = parse_zk_spec(spec)
    return ZK(addr, root=root or spec_root or DEFAULT_ROOT, timeout=timeout)
