"""Tenant moves on real ZooKeeper, a Redis per pod and MariaDB shards."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, select

import podjobs
from podjobs import keys
from podjobs.fairshare import ready_count
from podjobs.infra.topofile import Topology
from podjobs.pods import moves
from podjobs.pods.moves import MoveError, Mover
from podjobs.pods.podworker import PodWorker
from podjobs.pods.router import PodClient, connect
from podjobs.pods.topology import TenantState, TopologyStore, register_topology
from podjobs.pods.zk import ZK
from tests.apps import moves_app
from tests.helpers import fast_config, wait_until


@pytest.fixture
def store(zk: ZK, pods: Topology) -> TopologyStore:
    register_topology(zk, pods)
    for p in pods.pods:
        e = create_engine(p.shard_url)
        moves_app.metadata.create_all(e)
        e.dispose()
    s = TopologyStore(zk)
    s.assign_many({"mover": "p1", "stayer": "p1"})
    e = create_engine(pods.pod("p1").shard_url)
    with e.begin() as c:
        c.execute(moves_app.profile.insert(), [{"tenant": "mover", "name": "Mover Ltd"},
                                               {"tenant": "stayer", "name": "Stayer Inc"}])
    e.dispose()
    return s


@pytest.fixture
def client(cluster: Any, zk_root: str, store: TopologyStore) -> Iterator[PodClient]:
    c = connect(cluster.topology.zookeeper, zk_root)
    c.router.directory.wait_for(lambda d: d.tenant("stayer") is not None, 10)
    podjobs.configure(client=c)
    yield c
    podjobs.configure(client=podjobs.Client(c.router.backend("p1")))


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    registered: list[Any] = []
    monkeypatch.setattr(moves, "_hooks", registered)
    return registered


def runs(topo: Topology) -> list[tuple[str, int, str, float, str]]:
    out = []
    for p in topo.pods:
        e = create_engine(p.shard_url)
        with e.connect() as c:
            out += [(t, n, pod, at, p.name) for t, n, pod, at in c.execute(
                select(moves_app.runs.c.tenant, moves_app.runs.c.n, moves_app.runs.c.pod,
                       moves_app.runs.c.at))]
        e.dispose()
    return out


def profiles(url: str) -> list[tuple[str, str]]:
    e = create_engine(url)
    with e.connect() as c:
        rows = [tuple(r) for r in c.execute(select(moves_app.profile).order_by(moves_app.profile.c.tenant))]
    e.dispose()
    return rows  # type: ignore[return-value]


def workers(zk: ZK, names: list[str]) -> list[PodWorker]:
    ws = [PodWorker(zk, n, fast_config(concurrency=4)) for n in names]
    for w in ws:
        w.start()
    return ws


def test_move_under_steady_enqueue_and_work_loses_nothing_and_runs_nothing_on_the_old_pod(
        zk: ZK, store: TopologyStore, client: PodClient, pods: Topology, hooks: list[Any]) -> None:
    hooks.append(moves_app.copy_profile)
    moves_app.record_run.enqueue_in(0.3, 10_000, tenant="mover")  # a scheduled job to carry
    moves_app.record_run.enqueue_many([(i, 0.02) for i in range(20)], tenant="stayer")
    stop = threading.Event()
    sent: list[int] = []

    def enqueue_steadily() -> None:
        n = 0
        while not stop.is_set() and n < 2000:
            moves_app.record_run.enqueue(n, tenant="mover")
            sent.append(n)
            n += 1
            time.sleep(0.002)  # the workload's pace (steady enqueues), not a wait for state

    ws = workers(zk, ["p1", "p2"])
    t = threading.Thread(target=enqueue_steadily)
    t.start()
    try:
        wait_until(lambda: len([r for r in runs(pods) if r[0] == "mover"]) >= 20, what="work under way")
        entry = Mover(zk, progress=lambda m: None).move("mover", "p2")
        flipped = time.time()
        at_flip = len(sent)  # a few enqueues after the move, on its final pod
        wait_until(lambda: len(sent) >= at_flip + 20 or not t.is_alive(), timeout=10,
                   what="20 enqueues after the flip")
        stop.set()
        t.join()
        expected = set(sent) | {10_000}
        wait_until(lambda: {r[1] for r in runs(pods) if r[0] == "mover"} >= expected, timeout=30,
                   what="every job of the moved tenant to run")
    finally:
        stop.set()
        t.join()
        for w in ws:
            w.stop()
    assert entry.pod == "p2" and entry.move is None and entry.state == "active"
    mine = [r for r in runs(pods) if r[0] == "mover"]
    counts = Counter(r[1] for r in mine)
    assert not [n for n, c in counts.items() if c > 1], "a job ran twice"
    assert set(counts) == expected, "a job was lost"
    assert all(r[2] == r[4] for r in mine), "a row landed on another pod's shard"
    late_on_p1 = [r for r in mine if r[2] == "p1" and r[3] > flipped]
    assert not late_on_p1, f"{len(late_on_p1)} job(s) ran on the old pod after the flip"
    assert any(r[2] == "p2" for r in mine) and any(r[2] == "p1" for r in mine)
    assert profiles(pods.pod("p2").shard_url) == [("mover", "Mover Ltd")]
    assert {r[1] for r in runs(pods) if r[0] == "stayer"} == set(range(20))
    p2 = redis.Redis.from_url(pods.pod("p2").redis_url)
    assert not p2.exists(keys.held("mover")) and not p2.exists(keys.moving("mover"))


def test_a_failed_move_holds_jobs_and_can_be_rolled_back(
        zk: ZK, store: TopologyStore, client: PodClient, pods: Topology, hooks: list[Any]) -> None:
    def broken(tenant: str, src: Any, dst: Any) -> None:
        raise RuntimeError("copy failed: destination table missing")

    hooks.append(broken)
    moves_app.record_run.enqueue_many([(i,) for i in range(5)], tenant="mover")
    p1 = redis.Redis.from_url(pods.pod("p1").redis_url)
    assert p1.llen(keys.tenant_queue("default", "mover")) == 5  # fair share: its own list
    with pytest.raises(MoveError, match="stopped at step copy_data.*destination table missing"):
        Mover(zk, progress=lambda m: None).move("mover", "p2")
    entry = store.where("mover")
    assert entry.state == "moving" and entry.move and entry.move["step"] == "copy_data"
    assert "destination table missing" in entry.move["error"]
    client.router.directory.wait_for(lambda d: (d.tenant("mover") or entry).state == "moving", 10)
    moves_app.record_run.enqueue(5, tenant="mover")  # held on p2, not lost, not run
    p2 = redis.Redis.from_url(pods.pod("p2").redis_url)
    assert ready_count(p1, "default") == 0 and p2.hlen(keys.held("mover")) == 6
    Mover(zk, progress=lambda m: None).rollback("mover")
    entry = store.where("mover")
    assert entry.pod == "p1" and entry.state == "active" and entry.move is None
    assert ready_count(p1, "default") == 6 and not p2.exists(keys.held("mover"))
    ws = workers(zk, ["p1", "p2"])
    try:
        wait_until(lambda: len(runs(pods)) == 6, timeout=20, what="the returned jobs to run on p1")
    finally:
        for w in ws:
            w.stop()
    assert {(r[1], r[2]) for r in runs(pods)} == {(i, "p1") for i in range(6)}


def test_a_failed_move_can_be_resumed(
        zk: ZK, store: TopologyStore, client: PodClient, pods: Topology, hooks: list[Any]) -> None:
    calls: list[str] = []

    def flaky(tenant: str, src: Any, dst: Any) -> None:
        calls.append(tenant)
        if len(calls) == 1:
            raise RuntimeError("shard busy")
        moves_app.copy_profile(tenant, src, dst)

    hooks.append(flaky)
    moves_app.record_run.enqueue_many([(i,) for i in range(3)], tenant="mover")
    steps: list[tuple[int, int, str]] = []
    with pytest.raises(MoveError, match="shard busy"):
        Mover(zk, progress=lambda m: None, on_step=lambda *a: steps.append(a)).move("mover", "p3")
    # the bar of `tenants move` (on_step): up to the step that failed, then on from it
    assert steps == [(0, 5, "quiesce"), (1, 5, "carry"), (2, 5, "copy_data")]
    steps.clear()
    entry = Mover(zk, progress=lambda m: None, on_step=lambda *a: steps.append(a)).resume("mover")
    assert steps == [(2, 5, "copy_data"), (3, 5, "flip"), (4, 5, "release"), (5, 5, "done")]
    assert entry.pod == "p3" and entry.move is None
    p3 = redis.Redis.from_url(pods.pod("p3").redis_url)
    assert ready_count(p3, "default") == 3
    assert profiles(pods.pod("p3").shard_url) == [("mover", "Mover Ltd")]


def test_move_refusals(zk: ZK, store: TopologyStore, hooks: list[Any]) -> None:
    with pytest.raises(podjobs.ConfigurationError, match="no data-copy hook"):
        Mover(zk).move("mover", "p2")
    with pytest.raises(podjobs.ConfigurationError, match="already lives on pod p1"):
        Mover(zk, jobs_only=True).move("mover", "p1")
    with pytest.raises(podjobs.UnknownTenant):
        Mover(zk, jobs_only=True).move("ghost", "p2")


def test_a_bulk_enqueue_during_a_move_is_held_whole(
        zk: ZK, store: TopologyStore, client: PodClient, pods: Topology, hooks: list[Any]) -> None:
    from dataclasses import replace as dc_replace

    entry = store.where("mover")
    p2 = redis.Redis.from_url(pods.pod("p2").redis_url)
    p2.set(keys.moving("mover"), "m1")
    store.set_tenant(dc_replace(entry, state=TenantState.MOVING, move={"id": "m1", "from": "p1", "to": "p2",
                                                              "step": "quiesce"}))
    client.router.directory.wait_for(lambda d: (d.tenant("mover") or entry).state == "moving", 10)
    handles = moves_app.record_run.enqueue_many([(i,) for i in range(5000)], tenant="mover")
    assert {h.pod for h in handles} == {"p2"}
    assert p2.hlen(keys.held("mover")) == 5000 and ready_count(p2, "default") == 0


def test_a_long_job_of_the_moving_tenant_checkpoints_instead_of_delaying_the_move(
        zk: ZK, store: TopologyStore, client: PodClient, pods: Topology, hooks: list[Any]) -> None:
    moves_app.long_steps.enqueue(800, 0.008, tenant="mover")  # about 8 s if nobody stops it
    ws = workers(zk, ["p1", "p2"])
    try:
        wait_until(lambda: len(runs(pods)) >= 20, what="the long job under way on p1")
        Mover(zk, jobs_only=True, progress=lambda m: None).move("mover", "p2")
        # the move did not wait for the long job: it returned with the job unfinished
        at_move = len(runs(pods))
        assert at_move < 800, "the move waited for the long job instead of stopping it"
        wait_until(lambda: len(runs(pods)) >= 800, timeout=40, what="the job to finish on p2")
    finally:
        for w in ws:
            w.stop()
    rows = sorted(runs(pods), key=lambda r: r[1])
    assert [r[1] for r in rows] == list(range(800))  # every step once, resumed at its checkpoint
    assert rows[0][2] == "p1" and rows[-1][2] == "p2"
    # stopped at a checkpoint on p1, the rest on p2: p1's steps are a prefix done by the move
    on_p1 = [r[1] for r in rows if r[2] == "p1"]
    assert on_p1 == list(range(len(on_p1))) and len(on_p1) <= at_move
    assert all(r[2] == r[4] for r in rows)
