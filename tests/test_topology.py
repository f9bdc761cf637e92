"""podjobs.pods topology, directory, worker registration and CLI, on the real ZooKeeper.

1. Pure parts from tables: ZooKeeper address parsing, name validation, CSV reading.
2. `TopologyStore`: pods, assignments (one by one and 500 in bulk), the
   UnknownTenant message, compare-and-set for moves.
3. `Directory`: changes made through another client arrive by watch; the cache
   answers while ZooKeeper is stopped and catches up after it is started again
   on the same port; watches survive a session expiry (forced the way kazoo's
   old test harness did: a second client with the same session id and
   password connects and closes the session).
4. `WorkerRegistration` and `fleet`, also across a session expiry.
5. The CLI commands, called through their parser with --json.

Every test works under its own ZooKeeper root (`zk_root`); the tests that stop
ZooKeeper restart it in a `finally`, since the whole session shares it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from kazoo.client import KazooClient

from podjobs.errors import ConfigurationError, PodDraining, UnknownPod, UnknownTenant
from podjobs.infra.ports import free_port
from podjobs.infra.topofile import Topology
from podjobs.pods import zk as zk_module
from podjobs.pods.buckets import DEFAULT_BUCKETS, MAX_BUCKET_BYTES, bucket_of, encode_bucket
from podjobs.pods.directory import Change, Directory
from podjobs.pods.migratedir import migrate_directory
from podjobs.pods.moves import moves_in_progress
from podjobs.pods.registration import WorkerRegistration, fleet
from podjobs.pods.topology import (
    Pod,
    PodState,
    TenantState,
    TopologyConflict,
    TopologyStore,
    register_topology,
    validate_name,
)
from podjobs.pods.zk import (
    ZK,
    BadVersionError,
    ConnState,
    parse_zk_spec,
    reconnect_retry,
    zk_from_env,
)
from podjobs.surface import cmd_moves, cmd_pods, cmd_tenants, options
from tests.helpers import wait_until

# Seconds: short sessions so expiry tests are quick (the test server allows >= 1 s).
SESSION_TIMEOUT = 2.0
WAIT = 15.0


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture
def make_zk(cluster: Any, zk_root: str) -> Iterator[Callable[[], ZK]]:
    """Started `ZK` clients on the test's root, with short timeouts; all stopped after."""
    made: list[ZK] = []

    def make() -> ZK:
        zk = ZK(
            cluster.topology.zookeeper,
            root=zk_root,
            timeout=SESSION_TIMEOUT,
            connection_retry=reconnect_retry(max_delay=0.3),
        )
        made.append(zk)
        return zk.start(timeout=10)

    yield make
    for zk in made:
        with contextlib.suppress(Exception):
            zk.stop()


@pytest.fixture
def zk(make_zk: Callable[[], ZK]) -> ZK:
    return make_zk()


@pytest.fixture
def store(zk: ZK, pods: Topology) -> TopologyStore:
    """A store whose ZooKeeper root holds the session's pods p1..p3."""
    register_topology(zk, pods)
    return TopologyStore(zk)


class StateLog:
    """Connection states a ZK client went through, awaitable."""

    def __init__(self, zk: ZK) -> None:
        self.states: list[ConnState] = []
        self._cond = threading.Condition()
        zk.add_listener(self._on)

    def _on(self, state: ConnState) -> None:
        with self._cond:
            self.states.append(state)
            self._cond.notify_all()

    def wait(self, *sequence: ConnState, timeout: float = WAIT) -> bool:
        """True once `sequence` occurred in order (other states may come between)."""

        def seen() -> bool:
            it = iter(self.states)
            return all(any(s == want for s in it) for want in sequence)

        with self._cond:
            return self._cond.wait_for(seen, timeout)


def zookeeper_server(cluster: Any) -> Any:
    local = getattr(cluster, "cluster", None)
    if local is None:
        pytest.skip("stopping ZooKeeper needs the local servers (PODJOBS_TEST_SERVERS=local)")
    return next(s for s in local.servers() if s.kind == "zookeeper")


@contextlib.contextmanager
def zookeeper_stopped(cluster: Any, admin: Any) -> Iterator[Callable[[], None]]:
    """Stop the session's ZooKeeper; yields `restart()`; always running again afterwards.

    Afterwards it also waits until `admin`, the session-wide kazoo client of
    tests/servers.py, is connected again: kazoo's default reconnect backoff
    doubles up to an hour, so it may come back seconds after the server, and
    the next test's root cleanup would otherwise meet a dead session.
    """
    server = zookeeper_server(cluster)
    assert server.is_running()
    admin_states: list[str] = []
    cond = threading.Condition()

    def on_admin_state(state: Any) -> None:
        with cond:
            admin_states.append(str(state))
            cond.notify_all()

    def restart() -> None:
        if not server.is_running():
            server.start()
        server.wait_ready(60)

    admin.add_listener(on_admin_state)
    server.stop(timeout=10)
    try:
        yield restart
    finally:
        restart()
        with cond:
            # SUSPENDED (maybe LOST), then CONNECTED; the 30 s cover kazoo's backoff.
            back = cond.wait_for(
                lambda: (
                    "SUSPENDED" not in admin_states
                    or "CONNECTED" in admin_states[admin_states.index("SUSPENDED") :]
                ),
                30,
            )
        admin.remove_listener(on_admin_state)
        assert back, f"the shared ZooKeeper client did not reconnect: {admin_states}"


def expire_session(zk: ZK) -> int:
    """Make the server expire `zk`'s session; returns the old session id.

    A second client joins the session (the server drops the first client's
    connection) and closes it; the first client then reconnects to a session
    the server no longer knows, and kazoo reports LOST.
    """
    session_id, password = zk.kazoo_client.client_id
    other = KazooClient(hosts=zk.hosts, client_id=(session_id, password), timeout=SESSION_TIMEOUT)
    other.start(timeout=10)
    assert other.client_id[0] == session_id
    other.stop()
    other.close()
    return int(session_id)


def topology_parser() -> argparse.ArgumentParser:
    """A parser with the pods, fleet and tenants commands only (as `podjobs.cli` adds them)."""
    parser = argparse.ArgumentParser(prog="podjobs")
    cmds = options.Commands(parser.add_subparsers(dest="command"))
    for module in (cmd_pods, cmd_tenants, cmd_moves):
        module.register(cmds)
    return parser


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """Run `podjobs ARGV --json` through the pods and tenants commands alone; returns the JSON."""
    parser = topology_parser()
    args = parser.parse_args([*argv, "--json"])
    capsys.readouterr()
    assert args.func(args) == 0
    return json.loads(capsys.readouterr().out)


# -- pure -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "hosts", "root"),
    [
        ("127.0.0.1:2181", "127.0.0.1:2181", None),
        ("127.0.0.1:2181/", "127.0.0.1:2181", None),
        ("a:1,b:2/podjobs/prod", "a:1,b:2", "/podjobs/prod"),
        ("zk.local:2181//x//", "zk.local:2181", "/x"),
    ],
)
def test_parse_zk_spec(spec: str, hosts: str, root: str | None) -> None:
    assert parse_zk_spec(spec) == (hosts, root)


def test_zk_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODJOBS_ZK", raising=False)
    with pytest.raises(ConfigurationError, match="set PODJOBS_ZK"):
        zk_from_env()
    monkeypatch.setenv("PODJOBS_ZK", "10.0.0.1:2181,10.0.0.2:2181/pj")
    zk = zk_from_env()
    assert (zk.hosts, zk.root, zk.path("tenants", "t1")) == (
        "10.0.0.1:2181,10.0.0.2:2181", "/pj", "/pj/tenants/t1",
    )  # fmt: skip
    assert zk_from_env(root="/other").root == "/other"
    assert zk_from_env("h:1").root == "/podjobs"
    with pytest.raises(ConfigurationError, match="not 'host:port"):
        ZK("bad host:1")


@pytest.mark.parametrize(
    ("name", "ok"),
    [("shop-1", True), ("a.b_C-9", True), ("x" * 128, True), ("x" * 129, False),
     ("", False), (".", False), ("..", False), ("a/b", False), ("a b", False), ("é", False),
     ("shop-a\n", False), ("\nshop-a", False), ("x" * 128 + "\n", False)],
)  # fmt: skip
def test_validate_name(name: str, ok: bool) -> None:
    if ok:
        assert validate_name("tenant", name) == name
    else:
        with pytest.raises(ConfigurationError, match="tenant name .* is invalid"):
            validate_name("tenant", name)


def test_read_assignments() -> None:
    lines = ["tenant,pod", "# comment", "", "t1, p1", "t2,p2", "t1,p1"]
    assert cmd_tenants.read_assignments(lines) == {"t1": "p1", "t2": "p2"}
    with pytest.raises(ConfigurationError, match="line 2: tenant 't1' is listed for both"):
        cmd_tenants.read_assignments(["t1,p1", "t1,p2"])
    with pytest.raises(ConfigurationError, match="line 1: expected 'tenant,pod'"):
        cmd_tenants.read_assignments(["t1"])
    with pytest.raises(ConfigurationError, match="line 1: pod name 'p 1' is invalid"):
        cmd_tenants.read_assignments(["t1,p 1"])


# -- ZK wrapper -------------------------------------------------------------------------


def test_zk_unreachable_is_a_clear_error() -> None:
    port = free_port()
    with pytest.raises(
        ConfigurationError, match=rf"cannot reach ZooKeeper at 127\.0\.0\.1:{port} .*podjobs dev up"
    ):
        ZK(f"127.0.0.1:{port}").start(timeout=0.5)


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[int, list[float]]]:
    """A TCP server that accepts connections and never answers (a ZooKeeper that lost a
    handshake): yields its port and the monotonic times of the connections it accepted."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    accepted: list[float] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = listener.accept()
                accepted.append(time.monotonic())
                held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def test_zk_handshake_wait_is_bounded() -> None:
    # kazoo would wait session timeout / hosts (10 s here) for a handshake's answer.
    assert zk_module.HANDSHAKE_TIMEOUT == 2.0
    handler = ZK("127.0.0.1:2181", timeout=10).kazoo_client._connection
    assert isinstance(handler, zk_module._BoundedHandshake)
    assert handler.handshake_timeout == 2.0
    # kazoo's own wait when it is the shorter one; one host listed once.
    assert ZK("127.0.0.1:2181", timeout=1.5).kazoo_client._connection.handshake_timeout == 1.5
    three = ZK("a:1,b:2,c:3", timeout=3.0).kazoo_client
    assert three._connection.handshake_timeout == 1.0 and len(three.hosts) == 3


def test_zk_unanswered_handshake_is_given_up_and_retried_at_once() -> None:
    """Breaks if kazoo's connection internals change under `_BoundedHandshake`: with a
    server that never answers, kazoo alone makes one attempt in 10 s; bounded to 0.3 s and
    retried after 0.1 s (not the growing backoff), ~6 attempts in 2.5 s."""
    with silent_server() as (port, accepted):
        zk = ZK(f"127.0.0.1:{port}", timeout=10, handshake_timeout=0.3,
                connection_retry=reconnect_retry(max_delay=2.0))
        t0 = time.monotonic()
        with pytest.raises(ConfigurationError, match="cannot reach ZooKeeper"):
            zk.start(timeout=2.5)
        assert time.monotonic() - t0 < 4
    gaps = [b - a for a, b in zip(accepted, accepted[1:], strict=False)]
    assert len(accepted) >= 5, accepted
    assert all(0.3 <= g < 0.9 for g in gaps), gaps


def test_zk_json_helpers(zk: ZK) -> None:
    path = zk.path("things", "a")
    assert zk.get_json(path) is None
    zk.create_json(path, {"n": 1})
    assert zk.get_json(path) == ({"n": 1}, 0)
    assert zk.set_json(path, {"n": 2}, version=0) == 1
    with pytest.raises(BadVersionError):
        zk.set_json(path, {"n": 3}, version=0)
    assert zk.children(zk.path("things")) == ["a"]
    assert zk.children(zk.path("nothing")) == []
    assert zk.delete(zk.path("things"), recursive=True)
    assert not zk.delete(path)


# -- TopologyStore ----------------------------------------------------------------------


def test_pods_add_list_and_states(store: TopologyStore, pods: Topology) -> None:
    assert list(store.pods()) == ["p1", "p2", "p3"]
    p1 = store.pod("p1")
    assert (p1.redis_url, p1.shard_url, p1.state) == (
        pods.pods[0].redis_url, pods.pods[0].shard_url, PodState.ACTIVE,
    )  # fmt: skip
    assert store.add_pod(p1) is False  # the same again: nothing to do
    other = Pod("p1", "redis://127.0.0.1:1/0", p1.shard_url)
    with pytest.raises(
        ConfigurationError, match="pod 'p1' already exists with redis .*replace=True"
    ):
        store.add_pod(other)
    store.set_pod_state("p1", "draining")
    assert store.add_pod(other, replace=True) is True
    assert store.pod("p1") == Pod("p1", other.redis_url, p1.shard_url, PodState.DRAINING)
    with pytest.raises(
        ConfigurationError, match="pod state 'gone' is not one of: active, draining"
    ):
        store.set_pod_state("p1", "gone")
    with pytest.raises(UnknownPod, match=r"pod 'p9' is not in the topology \(pods: p1, p2, p3\)"):
        store.set_pod_state("p9", PodState.ACTIVE)


def test_assign_where_list(store: TopologyStore) -> None:
    entry = store.assign("shop-1", "p1")
    assert (entry.tenant, entry.pod, entry.state, entry.version) == (
        "shop-1",
        "p1",
        TenantState.ACTIVE,
        0,
    )
    assert store.assign("shop-1", "p1") == entry  # same pod: nothing to do
    with pytest.raises(
        TopologyConflict, match="already on pod 'p1'.*'podjobs tenants move shop-1 --to p2'"
    ):
        store.assign("shop-1", "p2")
    store.assign("shop-2", "p2")
    store.assign("shop-3", "p2")
    assert store.where("shop-2").pod == "p2"
    assert [e.tenant for e in store.tenants()] == ["shop-1", "shop-2", "shop-3"]
    assert [e.tenant for e in store.tenants(pod="p2")] == ["shop-2", "shop-3"]
    with pytest.raises(UnknownPod, match="pod 'p7' is not in the topology"):
        store.assign("shop-4", "p7")
    store.set_pod_state("p3", PodState.DRAINING)
    with pytest.raises(PodDraining, match=r"pod 'p3' is draining .*\(p1, p2\)"):
        store.assign("shop-4", "p3")
    with pytest.raises(ConfigurationError, match="tenant name 'bad/name' is invalid"):
        store.assign("bad/name", "p1")
    assert store.tenant("shop-4") is None


def test_unknown_tenant_message(store: TopologyStore) -> None:
    with pytest.raises(UnknownTenant) as info:
        store.where("shop-9")
    assert str(info.value) == (
        "tenant 'shop-9' is not in the directory (pods: p1, p2, p3); "
        "assign it with 'podjobs tenants assign shop-9 POD'"
    )


def test_assign_many_500_is_one_write_per_bucket(
    store: TopologyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What makes it fast is that it is batched: 500 tenants in one pipelined write per
    bucket touched, no write of its own per tenant (timed by bench/pods.py, bench/scale.py)."""
    wanted = {f"t{i:04d}": f"p{i % 3 + 1}" for i in range(500)}
    rounds: list[int] = []
    write_many = store.zk.write_many

    def counted(writes: list[tuple[str, bytes, int]]) -> dict[str, int | Exception]:
        rounds.append(len(writes))
        return write_many(writes)

    def one_by_one(*a: Any, **kw: Any) -> Any:
        raise AssertionError("assign_many fell back to one write per tenant")

    monkeypatch.setattr(store.zk, "write_many", counted)
    monkeypatch.setattr(store, "assign", one_by_one)
    summary = store.assign_many(wanted)
    monkeypatch.undo()
    touched = {bucket_of(t, store.buckets.buckets) for t in wanted}
    assert len(summary.assigned) == 500 and summary.unchanged == []
    assert sum(rounds) == len(touched) < 500  # one write per bucket, in 2 pipelined rounds
    assert len(rounds) == -(-len(touched) // 256)
    listed = store.tenants()
    assert {e.tenant: e.pod for e in listed} == wanted
    assert {e.version for e in listed} == {0}
    # Again: nothing changes. With one tenant on another pod: nothing is written at all.
    assert len(store.assign_many(wanted).unchanged) == 500
    with pytest.raises(
        TopologyConflict,
        match=r"1 tenant\(s\) already live on another pod: t0000 \(on p1, asked p2\)",
    ):
        store.assign_many({"new-1": "p1", "t0000": "p2"})
    assert store.tenant("new-1") is None


def test_assign_many_chunks_and_a_racing_writer(
    store: TopologyStore, make_zk: Callable[[], ZK], monkeypatch: pytest.MonkeyPatch
) -> None:
    store.assign("b", "p2")
    # "b" is already on that pod: unchanged. Chunks of 2 buckets: several rounds.
    summary = store.assign_many({"a": "p1", "b": "p2", "c": "p3", "d": "p1", "e": "p1"}, chunk=2)
    assert sorted(summary.assigned) == ["a", "c", "d", "e"] and summary.unchanged == ["b"]

    # Another writer writes the same buckets between our read and our write: our
    # compare-and-set fails, the bucket is read again and the write redone (no lost update).
    other = TopologyStore(make_zk())
    racing = {"r2": "p1", "other-1": "p2"}
    write_many = store.zk.write_many

    def racy(writes: list[tuple[str, bytes, int]]) -> dict[str, int | Exception]:
        for tenant, pod in racing.items():
            if other.tenant(tenant) is None:
                other.assign(tenant, pod)
        return write_many(writes)

    monkeypatch.setattr(store.zk, "write_many", racy)
    monkeypatch.setattr(store.buckets, "_buckets", 1)  # every tenant in one bucket
    monkeypatch.setattr(other.buckets, "_buckets", 1)
    summary = store.assign_many({"r1": "p1", "r2": "p1", "r3": "p2"})
    assert sorted(summary.assigned) == ["r1", "r3"] and summary.unchanged == ["r2"]
    assert other.where("other-1").pod == "p2"  # the racer's write was kept
    racing = {"r5": "p3"}  # now the racer puts a tenant on another pod
    with pytest.raises(TopologyConflict, match="tenant 'r5' is already on pod 'p3'"):
        store.assign_many({"r4": "p1", "r5": "p1"})


def test_set_tenant_compare_and_set(store: TopologyStore) -> None:
    entry = store.assign("shop-1", "p1")
    moving = store.set_tenant(replace(entry, state=TenantState.MOVING, move={"to": "p2"}))
    assert moving.version == 1
    assert store.where("shop-1") == moving
    with pytest.raises(
        TopologyConflict, match=r"tenant 'shop-1' changed since version 0 was read \(now version 1"
    ):
        store.set_tenant(replace(entry, pod="p3"))
    store.set_pod_state("p2", PodState.DRAINING)  # draining pods may still hold tenants
    done = store.set_tenant(replace(moving, pod="p2", state=TenantState.ACTIVE, move=None))
    assert (done.pod, done.state, done.move, done.version) == ("p2", TenantState.ACTIVE, None, 2)
    with pytest.raises(UnknownPod):
        store.set_tenant(replace(done, pod="p9"))
    with pytest.raises(ConfigurationError, match="use assign"):
        store.set_tenant(replace(done, tenant="new", version=-1))


# -- Directory ------------------------------------------------------------------------


def test_directory_follows_another_client(store: TopologyStore, make_zk: Callable[[], ZK]) -> None:
    store.assign_many({f"t{i}": "p1" for i in range(500)})
    reader = make_zk()
    directory = Directory(reader).start()  # its load time: bench/pods.py
    changes: list[Change] = []
    directory.add_listener(changes.append)
    try:
        assert len(directory.tenants()) == 500 and list(directory.pods()) == ["p1", "p2", "p3"]
        assert directory.pod_of("t7") == "p1" and not directory.stale
        with pytest.raises(UnknownTenant, match="tenant 'nope' is not in the directory"):
            directory.pod_of("nope")
        with pytest.raises(UnknownPod, match="pod 'p9'"):
            directory.pod("p9")

        assert directory.tenant("new-shop") is None  # its bucket loaded (listings keep none)
        v0 = directory.version
        store.assign("new-shop", "p3")  # through the other client
        assert directory.wait_for(lambda d: d.tenant("new-shop") is not None, WAIT)
        assert directory.pod_of("new-shop") == "p3" and directory.version > v0
        entry = store.where("t7")
        store.set_tenant(replace(entry, state=TenantState.MOVING, move={"to": "p2"}))
        assert directory.wait_for(lambda d: d.tenant("t7").state == TenantState.MOVING, WAIT)
        store.set_pod_state("p2", PodState.DRAINING)
        assert directory.wait_for(lambda d: d.pod("p2").state == PodState.DRAINING, WAIT)
        store.add_pod(Pod("p4", "redis://127.0.0.1:9/0", "sqlite:///p4"))
        assert directory.wait_for(lambda d: "p4" in d.pods(), WAIT)
        # A batch (one write per bucket) reaches every loaded bucket.
        store.assign_many({f"bulk-{i:03d}": "p4" for i in range(300)})
        assert directory.wait_for(
            lambda d: all(d.tenant(f"bulk-{i:03d}") is not None for i in range(300)), WAIT)
        # A removed tenant leaves the cache.
        assert directory.tenant("t8") is not None
        assert store.remove_tenant("t8") and not store.remove_tenant("t8")
        assert directory.wait_for(lambda d: d.tenant("t8") is None, WAIT)
        assert {(c.kind, c.name, c.removed) for c in changes} >= {
            ("tenant", "new-shop", False), ("tenant", "t7", False), ("pod", "p2", False),
            ("pod", "p4", False), ("tenant", "t8", True),
        }  # fmt: skip
    finally:
        directory.stop()


def test_directory_costs_one_listener_and_one_thread_and_loads_lazily(
    store: TopologyStore, make_zk: Callable[[], ZK]
) -> None:
    store.assign_many({f"t{i}": "p1" for i in range(2000)})
    reader = make_zk()
    before = len(reader.kazoo_client.state_listeners)
    threads = threading.active_count()
    directory = Directory(reader).start()
    # No kazoo recipe: one state listener and one sync thread, whatever the tenants.
    assert len(reader.kazoo_client.state_listeners) == before + 1
    assert threading.active_count() == threads + 1
    assert directory.loaded_buckets == 0 and directory.loaded_tenants == 0
    assert directory.pod_of("t7") == "p1"  # reads (and watches) t7's bucket only
    assert directory.loaded_buckets == 1 and 0 < directory.loaded_tenants < 20
    watched = reader.kazoo_client._data_watchers
    assert len(watched) == 1 + 3  # t7's bucket and the 3 pods
    # A listing reads every bucket but keeps (and watches) none of those it had not loaded.
    assert len(directory.tenants()) == 2000 and directory.loaded_buckets == 1
    assert len(watched) == 1 + 3
    assert threading.active_count() == threads + 1
    directory.stop()
    assert len(reader.kazoo_client.state_listeners) == before
    assert threading.active_count() == threads
    store.assign("late", "p1")  # no longer followed, the last values stay
    assert not directory.wait_for(lambda d: d.tenant("late") is not None, 0.5)
    assert directory.pod_of("t7") == "p1"


def test_directory_keeps_at_most_max_buckets_lru_and_drops_their_watches(
    store: TopologyStore, make_zk: Callable[[], ZK]
) -> None:
    """Issue 17: a busy worker used to end up holding (and watching) every bucket."""
    store.assign_many({f"t{i}": "p1" for i in range(2000)})
    reader = make_zk()
    directory = Directory(reader, max_buckets=4).start()
    root = reader.path("tenantdir", "b") + "/"

    def watched() -> set[str]:
        return {p for p in reader.kazoo_client._data_watchers if p.startswith(root)}

    def path(t: str) -> str:
        return f"{root}{bucket_of(t, directory.buckets):04x}"

    try:
        names: dict[int, str] = {}  # one tenant in each of 12 buckets
        for i in range(2000):
            names.setdefault(bucket_of(f"t{i}", directory.buckets), f"t{i}")
            if len(names) == 12:
                break
        ts = list(names.values())
        for t in ts:
            assert directory.pod_of(t) == "p1"
        assert directory.loaded_buckets == 4 and directory.evicted == 8
        assert {path(t) for t in ts[-4:]} <= watched()
        # least recently used first: ts[-4] used again, then ts[0] loaded again -> ts[-3] goes
        directory.tenant(ts[-4])
        directory.tenant(ts[0])
        kept = [ts[0], ts[-4], ts[-2], ts[-1]]
        assert directory.loaded_buckets == 4 and directory.evicted == 9
        # every tenant removed by another client: the loaded buckets see it, the dropped
        # ones' watches fire into nothing and are not set again
        for t in ts:
            assert store.remove_tenant(t)
        assert directory.wait_for(
            lambda d: all(t not in d._buckets[bucket_of(t, d.buckets)][1] for t in kept), WAIT)
        wait_until(lambda: watched() == {path(t) for t in kept}, WAIT,
                   "only the kept buckets watched")
        assert directory.loaded_buckets == 4
        assert directory.tenant(ts[1]) is None  # a dropped bucket: read fresh on next use
        assert directory.loaded_buckets == 4 and path(ts[1]) in watched()
    finally:
        directory.stop()
    with pytest.raises(ConfigurationError, match="max_buckets=0"):
        Directory(reader, max_buckets=0)


@pytest.mark.parametrize("raw, expected", [
    (None, 256), ("", 256), (" 64 ", 64), ("1", 1),
    ("0", "'0'"), ("-3", "'-3'"), ("lots", "'lots'"), ("2.5", "'2.5'"),
])
def test_directory_buckets_from_the_environment(raw: str | None, expected: int | str) -> None:
    """`PODJOBS_DIRECTORY_BUCKETS` (issue 17): a whole number of 1 or more, else a
    ConfigurationError naming the value."""
    from podjobs.pods.directory import ENV_MAX_BUCKETS, max_buckets_from_env

    env = {} if raw is None else {ENV_MAX_BUCKETS: raw}
    if isinstance(expected, int):
        assert max_buckets_from_env(env) == expected
    else:
        with pytest.raises(ConfigurationError, match=f"PODJOBS_DIRECTORY_BUCKETS={expected}"):
            max_buckets_from_env(env)


def test_worker_directory_buckets_flag_and_env_reach_the_directory(
    store: TopologyStore, make_zk: Callable[[], ZK], monkeypatch: pytest.MonkeyPatch
) -> None:
    from podjobs.cli import build_parser

    args = build_parser().parse_args(["worker", "--app", "x", "--pod", "p1",
                                      "--directory-buckets", "7"])
    assert args.directory_buckets == 7
    reader = make_zk()
    monkeypatch.setenv("PODJOBS_DIRECTORY_BUCKETS", "5")
    assert Directory(reader).max_buckets == 5
    assert Directory(reader, max_buckets=7).max_buckets == 7  # the flag wins
    monkeypatch.setenv("PODJOBS_DIRECTORY_BUCKETS", "none")
    with pytest.raises(ConfigurationError, match="PODJOBS_DIRECTORY_BUCKETS='none'"):
        Directory(reader)


def test_directory_answers_while_zookeeper_is_down_and_catches_up(
    cluster: Any, _zk_admin: Any, store: TopologyStore, make_zk: Callable[[], ZK]
) -> None:
    store.assign_many({"shop-1": "p1", "shop-2": "p2"})
    reader = make_zk()
    states = StateLog(reader)
    directory = Directory(reader).start()
    try:
        for t in ("shop-1", "shop-2", "shop-3"):  # their buckets loaded: answered from memory
            directory.tenant(t)                      # while ZooKeeper is down
        version = directory.version
        with zookeeper_stopped(cluster, _zk_admin) as restart:
            assert directory.wait_for(lambda d: d.stale, WAIT)
            # Stale but answering, from memory.
            assert directory.pod_of("shop-1") == "p1" and directory.pod_of("shop-2") == "p2"
            with pytest.raises(UnknownTenant):
                directory.pod_of("shop-3")
            assert directory.version == version
            restart()
            writer = make_zk()  # a fresh client, after the restart
            TopologyStore(writer).assign("shop-3", "p3")
            # caught up: the write made after the restart reaches it, within the bound WAIT
            assert directory.wait_for(lambda d: d.tenant("shop-3") is not None, WAIT)
        assert directory.pod_of("shop-3") == "p3"
        assert directory.wait_for(lambda d: not d.stale, WAIT)
        assert states.wait(ConnState.SUSPENDED, ConnState.CONNECTED)
        # And the watches keep working afterwards.
        TopologyStore(writer).set_pod_state("p3", "draining")
        assert directory.wait_for(lambda d: d.pod("p3").state == PodState.DRAINING, WAIT)
    finally:
        directory.stop()


def test_session_expiry_reestablishes_watches_and_registration(
    store: TopologyStore, make_zk: Callable[[], ZK]
) -> None:
    store.assign("shop-1", "p1")
    worker_zk = make_zk()
    states = StateLog(worker_zk)
    directory = Directory(worker_zk).start()
    reg = WorkerRegistration(
        worker_zk, "p1", "w-1", {"queues": ["default"], "concurrency": 4}
    ).start()
    try:
        assert reg.registrations == 1
        old_session = expire_session(worker_zk)
        # Written while the first client is cut off or on its way to a new session.
        store.assign("shop-2", "p2")
        assert states.wait(ConnState.LOST, ConnState.CONNECTED)
        assert worker_zk.session_id not in (None, old_session)
        # The ephemeral node went with the old session and is back under the new one.
        assert reg.wait_registered(2, WAIT)
        stat = worker_zk.kazoo_client.exists(reg.path)
        assert stat is not None and stat.ephemeralOwner == worker_zk.session_id
        assert [w["worker_id"] for w in fleet(store.zk)["p1"]] == ["w-1"]
        # The directory saw the change made around the expiry, and sees new ones.
        assert directory.wait_for(lambda d: d.tenant("shop-2") is not None, WAIT)
        store.assign("shop-3", "p3")
        assert directory.wait_for(lambda d: d.tenant("shop-3") is not None, WAIT)
        store.set_pod_state("p1", "draining")
        assert directory.wait_for(lambda d: d.pod("p1").state == PodState.DRAINING, WAIT)
    finally:
        reg.stop()
        directory.stop()


# -- registration -----------------------------------------------------------------------


def test_registration_and_fleet(zk: ZK, make_zk: Callable[[], ZK]) -> None:
    assert fleet(zk) == {}
    other = make_zk()
    for bad in ("a/b", "a b", "", ".."):
        with pytest.raises(ConfigurationError, match="worker id .* is invalid"):
            WorkerRegistration(zk, "p1", bad)
    a = WorkerRegistration(
        zk, "p1", "host-1:100:AB12", {"queues": ["critical", "default"], "concurrency": 8}
    ).start()
    b = WorkerRegistration(
        other, "p2", "host-2-200", {"queues": ["default"], "concurrency": 2}
    ).start()
    workers = fleet(zk)
    assert sorted(workers) == ["p1", "p2"]
    info = workers["p1"][0]
    assert info["worker_id"] == "host-1:100:AB12" and info["pod"] == "p1"
    assert info["queues"] == ["critical", "default"] and info["concurrency"] == 8
    assert isinstance(info["pid"], int) and info["host"] and info["started"] > 0
    # The same id from another live session is refused.
    with pytest.raises(
        ConfigurationError, match="already registered by another live ZooKeeper session"
    ):
        WorkerRegistration(other, "p1", "host-1:100:AB12").start()
    a.stop()
    assert "p1" not in fleet(zk)
    other.stop()  # the session ends: ZooKeeper drops its ephemeral node
    assert fleet(zk) == {}
    b.stop()  # harmless after the session is gone


# -- CLI --------------------------------------------------------------------------------


def test_cli_commands(
    cluster: Any, pods: Topology, zk_root: str, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    zk_arg = ["--zk", f"{cluster.topology.zookeeper}{zk_root}"]
    for p in pods.pods:
        out = run_cli(
            capsys, "pods", "add", p.name, "--redis", p.redis_url, "--shard", p.shard_url, *zk_arg
        )
        assert out["changed"] == [p.name] and out["pod"]["state"] == "active"
    out = run_cli(
        capsys,
        "pods",
        "add",
        "p1",
        "--redis",
        pods.pods[0].redis_url,
        "--shard",
        pods.pods[0].shard_url,
        *zk_arg,
    )
    assert out["changed"] == [] and out["count"] == 0
    assert [p["pod"] for p in run_cli(capsys, "pods", "list", *zk_arg)] == ["p1", "p2", "p3"]
    out = run_cli(capsys, "pods", "set-state", "p3", "draining", *zk_arg)
    assert out["pod"]["state"] == "draining"

    out = run_cli(capsys, "tenants", "assign", "shop-1", "p1", *zk_arg)
    assert (out["tenant"]["tenant"], out["tenant"]["pod"], out["changed"]) == ("shop-1", "p1", ["shop-1"])
    csv_file = tmp_path / "tenants.csv"
    csv_file.write_text("tenant,pod\n" + "".join(f"bulk-{i},p{i % 2 + 1}\n" for i in range(100)))
    out = run_cli(capsys, "tenants", "assign", "--file", str(csv_file), *zk_arg)
    assert (out["count"], out["unchanged"]) == (100, 0)
    assert run_cli(capsys, "tenants", "where", "bulk-3", *zk_arg)["pod"] == "p2"
    listed = run_cli(capsys, "tenants", "list", "--pod", "p1", *zk_arg)
    assert len(listed) == 51 and listed[0]["tenant"] == "bulk-0"

    zk = ZK(cluster.topology.zookeeper, root=zk_root).start()
    try:
        reg = WorkerRegistration(zk, "p1", "w-9", {"queues": ["default"], "concurrency": 3}).start()
        (w,) = run_cli(capsys, "fleet", *zk_arg)
        assert (w["pod"], w["worker"], w["queues"]) == ("p1", "w-9", ["default"])
        reg.stop()
    finally:
        zk.stop()

    # Errors are PodjobsErrors (printed as one line by the main CLI).
    parser = topology_parser()
    with pytest.raises(UnknownTenant, match="assign it with 'podjobs tenants assign nobody POD'"):
        args = parser.parse_args(["tenants", "where", "nobody", *zk_arg])
        args.func(args)
    with pytest.raises(PodDraining):
        args = parser.parse_args(["tenants", "assign", "shop-2", "p3", *zk_arg])
        args.func(args)
    # Plain-text output is a table.
    args = parser.parse_args(["tenants", "list", "--pod", "p2", *zk_arg])
    capsys.readouterr()
    assert args.func(args) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["tenant", "pod", "state"]


def test_cli_zk_address_fallbacks(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("PODJOBS_ZK", raising=False)
    monkeypatch.setenv("PODJOBS_TOPOLOGY", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigurationError, match="pass --zk HOST:PORT.*podjobs dev up"):
        options.resolve_zk_spec(None)
    topo = tmp_path / "topology.json"
    Topology(zookeeper="127.0.0.1:2999", pods=[]).save(topo)
    monkeypatch.setenv("PODJOBS_TOPOLOGY", str(topo))
    assert options.resolve_zk_spec(None) == "127.0.0.1:2999/podjobs"
    monkeypatch.setenv("PODJOBS_ZK", "h:1/r")
    assert options.resolve_zk_spec(None) == "h:1/r"
    assert options.resolve_zk_spec("x:2") == "x:2"


# -- the bucket layout (issue 17) ----------------------------------------------------------


def test_a_million_tenants_fit_the_buckets_and_an_overfull_one_is_refused() -> None:
    """Pure: with the default bucket count, the fullest bucket at 1M tenants (names as
    long as bench/scale.py's, and at the 128-character maximum) stays far below 1 MB."""
    counts = [0] * DEFAULT_BUCKETS
    for i in range(1_000_000):
        counts[bucket_of(f"shop-{i:07d}", DEFAULT_BUCKETS)] += 1
    fullest = max(counts)
    assert 900 < fullest < 1100  # crc32 spreads them evenly
    entry = {"pod": "p20", "v": 3}
    size = len(encode_bucket({f"shop-{i:07d}": entry for i in range(fullest)}))
    assert size < 40_000
    long_names = {("x" * 120) + f"{i:08d}": entry for i in range(fullest)}
    assert len(encode_bucket(long_names)) < MAX_BUCKET_BYTES
    with pytest.raises(ConfigurationError, match=r"over the 900,000-byte limit .* --buckets N"):
        encode_bucket({("x" * 120) + f"{i:08d}": entry for i in range(7000)}, "bucket 0001")


def test_concurrent_writers_of_one_bucket_lose_no_update(
    store: TopologyStore, make_zk: Callable[[], ZK]
) -> None:
    """Real writers (own ZooKeeper sessions, threads) sign up and change tenants that all
    land in one bucket: every write is kept, each CAS loser retried."""
    n = 4
    stores = [TopologyStore(make_zk()) for _ in range(n)]
    for s in stores:
        s.buckets._buckets = 1  # one bucket for everybody: maximal contention
    store.buckets._buckets = 1
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            start.wait(WAIT)
            for i in range(25):
                stores[k].assign(f"w{k}-{i}", "p1")
            entry = stores[k].where(f"w{k}-0")
            for _ in range(5):  # a tenant only this writer changes: never a conflict
                entry = stores[k].set_tenant(replace(entry, pod=f"p{entry.version % 3 + 1}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 4)
    assert not errors
    listed = dict(store.tenants_named([f"w{k}-{i}" for k in range(n)
                                       for i in range(25)]))
    assert len(listed) == n * 25  # no sign-up lost
    assert all(listed[f"w{k}-0"].version == 5 for k in range(n))  # no change lost
    _, node_version = store.buckets.read(0)
    assert node_version >= n * 30 - 1  # every write was its own compare-and-set
    # Two writers of the same tenant from the same read: one wins, one is refused.
    entry = store.where("w0-1")
    store.set_tenant(replace(entry, state=TenantState.MOVING, move={"to": "p2"}))
    with pytest.raises(TopologyConflict, match="changed since version 0"):
        stores[1].set_tenant(replace(entry, pod="p3"))


def test_moves_index_lists_moves_without_a_scan(store: TopologyStore) -> None:
    store.assign_many({f"t{i}": "p1" for i in range(300)})
    assert store.moving() == [] and moves_in_progress(store.zk) == []
    entry = store.where("t5")
    moving = store.set_tenant(replace(entry, state=TenantState.MOVING, move={"to": "p2"}))
    assert store.zk.children(store.buckets.moves_path()) == ["t5"]
    assert [e.tenant for e in moves_in_progress(store.zk)] == ["t5"]
    store.set_tenant(replace(moving, pod="p2", state=TenantState.ACTIVE, move=None))
    assert store.zk.children(store.buckets.moves_path()) == [] and store.moving() == []


def _old_layout(zk: ZK, tenants: dict[str, dict[str, Any]], writes: dict[str, int]) -> None:
    """Tenants as the old release kept them: one node each, at a given node version."""
    for tenant, obj in tenants.items():
        path = zk.path("tenants", tenant)
        zk.create_json(path, obj)
        for _ in range(writes.get(tenant, 0)):
            zk.set_json(path, obj)


def test_migrate_directory_is_resumable_and_idempotent(
    store: TopologyStore, make_zk: Callable[[], ZK], capsys: pytest.CaptureFixture[str]
) -> None:
    zk = store.zk
    old = {f"old-{i:03d}": {"pod": f"p{i % 3 + 1}", "state": "active"} for i in range(120)}
    old["old-007"] = {"pod": "p1", "state": "moving", "move": {"to": "p2", "step": "carry"}}
    _old_layout(zk, old, {"old-007": 3, "old-010": 2})
    reader = make_zk()
    directory = Directory(reader).start()
    try:
        assert directory.tenant("old-001") is None  # not seen before the migration
        # Killed after the first chunk: that chunk is in its buckets, the rest still old.
        first = migrate_directory(zk, chunk=50, stop_after=1)
        assert (first.migrated, first.removed, first.left) == (50, 50, 70)
        assert len(zk.children(zk.path("tenants"))) == 70
        # A migrated tenant changes before the re-run: the re-run must not overwrite it.
        moved = store.where("old-000")
        store.set_tenant(replace(moved, pod="p3"))
        # Resumed through the command.
        zk_arg = ["--zk", f"{zk.hosts}{zk.root}"]
        out = run_cli(capsys, "tenants", "migrate-directory", "--chunk", "50", *zk_arg)
        assert (out["migrated"], out["removed"], out["left"]) == (70, 70, 0)
        assert not zk.exists(zk.path("tenants"))
        got = {e.tenant: e for e in store.tenants()}
        assert {t for t in got if t.startswith("old-")} == set(old)
        assert got["old-000"].pod == "p3" and got["old-000"].version == 1
        assert got["old-010"].version == 2 and got["old-001"].version == 0  # versions carried
        assert got["old-007"].state == TenantState.MOVING and got["old-007"].version == 3
        assert got["old-007"].move == {"to": "p2", "step": "carry"}
        assert [e.tenant for e in store.moving()] == ["old-007"]
        # Idempotent: nothing left to do.
        again = migrate_directory(zk)
        assert (again.migrated, again.removed, again.left) == (0, 0, 0)
        # A running directory sees the migrated tenants (buckets it had loaded were watched).
        assert directory.wait_for(lambda d: d.tenant("old-001") is not None, WAIT)
        assert directory.pod_of("old-002") == "p3"
    finally:
        directory.stop()


def test_a_move_reaches_a_directory_that_never_read_the_tenant(
    store: TopologyStore, make_zk: Callable[[], ZK]
) -> None:
    """A worker must see every move off its pod, also of tenants whose bucket it never
    read: the moves index brings the bucket in and announces the tenant."""
    store.assign_many({f"t{i}": "p1" for i in range(50)})
    directory = Directory(make_zk()).start()
    scheduler_like = Directory(make_zk(), follow_moves=False).start()
    seen: list[TenantState] = []  # what a listener finds when told (tenantcheck's _on_change)

    def on_change(c: Change) -> None:
        e = directory.tenant(c.name)
        if e is not None:
            seen.append(e.state)

    directory.add_listener(on_change)
    try:
        assert directory.loaded_buckets == 0
        entry = store.where("t3")
        store.set_tenant(replace(entry, state=TenantState.MOVING, move={"from": "p1", "to": "p2"}))
        assert directory.wait_for(lambda d: TenantState.MOVING in seen, WAIT)
        assert directory.loaded_buckets == 1 and set(directory.moving()) == {"t3"}
        assert scheduler_like.loaded_buckets == 0  # holds no tenant
    finally:
        directory.stop()
        scheduler_like.stop()
