"""Periodic jobs on real ZooKeeper and a Redis per pod: once per tick per pod, across a
change of leader (in-process with the crash between enqueue and state write, and a
SIGKILLed scheduler process), catch-up policies, a deposed leader, an unreachable pod."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from podjobs import cron as pc
from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.fairshare import ready_jobs
from podjobs.infra.topofile import Topology
from podjobs.pods.directory import Directory
from podjobs.pods.router import Router
from podjobs.pods.topology import Pod, PodState, TopologyStore, register_topology
from podjobs.pods.zk import ZK
from podjobs.scheduler import periodic as pm
from podjobs.scheduler.leader import NotLeader, Term, contenders, leader_info
from podjobs.scheduler.process import Scheduler
from podjobs.worker import Worker
from tests.apps import periodic_app
from tests.helpers import REPO, fast_config, stop_proc, wait_until

MINUTE = "* * * * *"
#: a minute boundary (2024-01-01T00:00:00Z): fake clocks start here
T0 = 1704067200


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def topo(zk: ZK, pods: Topology) -> Topology:
    register_topology(zk, pods)
    return pods


@contextmanager
def routing(zk: ZK, check_backends: bool = True) -> Iterator[Router]:
    d = Directory(zk).start()
    r = Router(d, check_backends=check_backends)
    try:
        yield r
    finally:
        r.close()
        d.stop()


def make_term(zk: ZK) -> Term:
    """A Term on an election node of our own (as if this session won the election)."""
    base = zk.path("scheduler", "election")
    node = zk.kazoo_client.create(f"{base}/test__lock__", b"{}", ephemeral=True, sequence=True,
                            makepath=True)
    return Term(zk, node, {"id": "test"})


def queued(topo: Topology, queue: str = "default") -> dict[str, list[dict[str, Any]]]:
    """Per pod: the payloads waiting in `queue`, oldest first."""
    out = {}
    for p in topo.pods:
        r = redis.Redis.from_url(p.redis_url)
        out[p.name] = [json.loads(x) for x in reversed(ready_jobs(r, queue))]
        r.close()
    return out


def ticks(payloads: list[dict[str, Any]], job: str | None = None) -> list[int]:
    return [p["periodic"]["tick"] for p in payloads if job is None or p["job"] == job]


def state(zk: ZK, job: str, target: str) -> dict[str, Any] | None:
    got = zk.get_json(pm.state_path(zk, job, target))
    return got[0] if got else None


def last_ticks(zk: ZK, job: str, targets: list[str]) -> list[int | None]:
    return [(state(zk, job, t) or {}).get("last_tick") for t in targets]


def assert_accounted(ts: list[int], missed: list[int]) -> None:
    """Every-second cron: each second between the first and the last tick is either a
    job's own tick or one folded into the next job's `missed`, exactly once."""
    assert len(ts) == len(set(ts)), f"a tick was enqueued twice: {ts}"
    assert ts == sorted(ts)
    for prev, cur, m in zip(ts, ts[1:], missed[1:], strict=False):
        assert cur - prev == 1 + m, f"ticks {prev} -> {cur} with missed={m}: lost or doubled"


# -- on real servers ------------------------------------------------------------------


def test_a_per_pod_job_fires_once_per_tick_on_each_pod(zk: ZK, topo: Topology) -> None:
    spec = pc.registered()["periodic.every_second"]
    names = topo.pod_names
    workers = [Worker(RedisBackend(p.redis_url), fast_config(pod=p.name)) for p in topo.pods]
    for w in workers:
        w.start()
    stop = threading.Event()
    with routing(zk) as router:
        duty = pm.PeriodicDuty(zk, router, [spec])
        sched = Scheduler(zk, [duty], interval=0.05)
        th = threading.Thread(target=sched.run, args=(stop,), daemon=True)
        th.start()
        rs = {p.name: redis.Redis.from_url(p.redis_url) for p in topo.pods}
        try:
            wait_until(lambda: all(r.llen(periodic_app.REC) >= 3 for r in rs.values()),
                       timeout=10, what="3 ticks run on every pod")
        finally:
            stop.set()
            th.join(10)
        wait_until(lambda: sum(r.llen(periodic_app.REC) for r in rs.values())
                   == duty.stats["enqueued"], timeout=10, what="every enqueued tick run")
        for w in workers:
            w.stop()
    runs = {n: [json.loads(x) for x in r.lrange(periodic_app.REC, 0, -1)] for n, r in rs.items()}
    per_pod_ticks = {}
    for name, rows in runs.items():
        assert {r["pod"] for r in rows} == {name}
        rows.sort(key=lambda r: r["tick"])
        assert_accounted([r["tick"] for r in rows], [r["missed"] for r in rows])
        per_pod_ticks[name] = [r["tick"] for r in rows]
    assert per_pod_ticks[names[0]] == per_pod_ticks[names[1]] == per_pod_ticks[names[2]]
    assert duty.stats["refused"] == 0 and not th.is_alive()


def test_failover_between_enqueue_and_state_write_enqueues_each_tick_once(
        zk: ZK, topo: Topology, cluster: Any, zk_root: str) -> None:
    spec = pc.make_spec(periodic_app.job_a, MINUTE, per_pod=True, catch_up="once")
    names = topo.pod_names
    clock = FakeClock(T0 + 30)
    zk_a = ZK(cluster.topology.zookeeper, zk_root).start(10)
    zk_b = ZK(cluster.topology.zookeeper, zk_root).start(10)
    stop_a, stop_b = threading.Event(), threading.Event()
    crash_at = T0 + 4 * 60

    with routing(zk_a) as router_a, routing(zk_b) as router_b:
        duty_a = pm.PeriodicDuty(zk_a, router_a, [spec], clock=clock)
        duty_b = pm.PeriodicDuty(zk_b, router_b, [spec], clock=clock)
        advance = duty_a._advance

        def crash_before_state_write(term: Term, path: str, new: dict[str, Any],
                                     version: int | None) -> bool:
            if new["last_tick"] >= crash_at:  # enqueued on the first pod; dies before the write
                zk_a.stop()
            return bool(advance(term, path, new, version))

        setattr(duty_a, "_advance", crash_before_state_write)  # noqa: B010
        sched_a = Scheduler(zk_a, [duty_a], interval=0.02, identity={"id": "A"})
        sched_b = Scheduler(zk_b, [duty_b], interval=0.02, identity={"id": "B"})
        th_a = threading.Thread(target=sched_a.run, args=(stop_a,), daemon=True)
        th_a.start()
        assert sched_a.led.wait(10)
        th_b = threading.Thread(target=sched_b.run, args=(stop_b,), daemon=True)
        th_b.start()
        try:
            wait_until(lambda: len(contenders(zk)) == 2, what="B standing by")
            wait_until(lambda: last_ticks(zk, spec.name, names) == [T0] * 3, what="first sight")
            for k in range(1, 7):
                clock.t = T0 + 60 * k + 1
                want = [T0 + 60 * k] * 3
                wait_until(lambda: last_ticks(zk, spec.name, names) == want,  # noqa: B023
                           what=f"tick {k} recorded on every pod")
                if k < 4:
                    assert (leader_info(zk) or {}).get("id") == "A"
            assert (leader_info(zk) or {}).get("id") == "B"
        finally:
            stop_a.set()
            stop_b.set()
            th_a.join(10)
            th_b.join(10)
            zk_b.stop()
            zk_a.stop()
    assert not th_a.is_alive() and not th_b.is_alive()
    got = queued(topo)
    for name in names:
        assert ticks(got[name]) == [T0 + 60 * k for k in range(1, 7)], name
        assert {p["periodic"]["missed"] for p in got[name]} == {0}
        assert {p["pod"] for p in got[name]} == {name}
    # A enqueued ticks 1-3 on all pods and tick 4 on the first; B refused that one again
    assert (duty_a.stats["enqueued"], duty_b.stats["enqueued"]) == (10, 8)
    assert duty_b.stats["refused"] == 1


def test_a_sigkilled_leader_is_replaced_and_no_tick_is_doubled_or_lost(
        zk: ZK, topo: Topology, cluster: Any, zk_root: str, tmp_path: Any) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    hosts = cluster.topology.zookeeper

    def spawn(ident: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{ident}.log", "ab")
        return subprocess.Popen([sys.executable, "-m", "tests.apps.periodic_app", hosts, zk_root,
                                 ident], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def leader() -> str | None:
        return (leader_info(zk) or {}).get("id")

    rs = [redis.Redis.from_url(p.redis_url) for p in topo.pods]
    qkey = keys.queue("default")
    a = spawn("A")
    b: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: leader() == "A", timeout=15, what="A leads")
        b = spawn("B")
        wait_until(lambda: len(contenders(zk)) == 2, timeout=15, what="B standing by")
        wait_until(lambda: all(r.llen(qkey) >= 2 for r in rs), timeout=10, what="2 ticks by A")
        a.send_signal(signal.SIGKILL)
        a.wait(5)
        before = [r.llen(qkey) for r in rs]
        wait_until(lambda: leader() == "B", timeout=15, what="B takes over")
        wait_until(lambda: all(r.llen(qkey) >= n + 2 for r, n in zip(rs, before, strict=True)),
                   timeout=10, what="2 ticks by B")
    finally:
        stop_proc(a, signal.SIGKILL)
        if b is not None:
            assert stop_proc(b) == 0
    got = queued(topo)
    for name in topo.pod_names:
        ts = ticks(got[name], "periodic.every_second")
        assert len(ts) >= 4
        assert_accounted(ts, [p["periodic"]["missed"] for p in got[name]])


def test_catch_up_skip_and_once_after_a_gap_on_one_pod(zk: ZK, topo: Topology) -> None:
    skip = pc.make_spec(periodic_app.job_a, MINUTE, catch_up="skip", grace=30)
    once = pc.make_spec(periodic_app.job_b, MINUTE, catch_up="once", grace=30)
    clock = FakeClock(T0 + 5)
    term = make_term(zk)
    with routing(zk) as router:
        duty = pm.PeriodicDuty(zk, router, [skip, once], clock=clock)
        duty.tick(term)  # first sight: nothing enqueued, the pod recorded
        assert state(zk, "periodic.a", pm.ONE_TARGET) == {"last_tick": T0, "pod": "p1"}
        clock.t = T0 + 60 + 5
        duty.tick(term)
        duty.tick(term)  # the same tick again: nothing more
        clock.t = T0 + 600 + 45  # 9 ticks missed; the latest is 45 s late, past the grace
        duty.tick(term)
        assert state(zk, "periodic.a", pm.ONE_TARGET) == {"last_tick": T0 + 600, "pod": "p1"}
        clock.t = T0 + 660 + 1
        duty.tick(term)
        # the pod stays the same while active; when it drains, the next one takes over
        TopologyStore(zk).set_pod_state("p1", PodState.DRAINING)
        router.directory.wait_for(lambda d: d.pod("p1").state == PodState.DRAINING, 10)
        clock.t = T0 + 720
        duty.tick(term)
    got = queued(topo)
    assert ticks(got["p1"], "periodic.a") == [T0 + 60, T0 + 660]
    assert ticks(got["p1"], "periodic.b") == [T0 + 60, T0 + 600, T0 + 660]
    assert [p["periodic"]["missed"] for p in got["p1"] if p["job"] == "periodic.b"] == [0, 8, 0]
    assert ticks(got["p2"], "periodic.a") == ticks(got["p2"], "periodic.b") == [T0 + 720]
    assert got["p3"] == []
    assert state(zk, "periodic.b", pm.ONE_TARGET) == {"last_tick": T0 + 720, "pod": "p2"}
    assert duty.stats["skipped"] == 9 and duty.stats["enqueued"] == 7


def test_a_deposed_leader_advances_nothing_and_its_enqueue_is_not_doubled(
        zk: ZK, topo: Topology) -> None:
    spec = pc.make_spec(periodic_app.job_a, MINUTE, per_pod=True)
    names = topo.pod_names
    clock = FakeClock(T0 + 1)
    old = make_term(zk)
    with routing(zk) as router:
        duty_old = pm.PeriodicDuty(zk, router, [spec], clock=clock)
        duty_new = pm.PeriodicDuty(zk, router, [spec], clock=clock)
        duty_old.tick(old)
        assert last_ticks(zk, spec.name, names) == [T0] * 3
        # the old leader's session expired: its node is gone, but it has not heard yet
        zk.delete(old.node_path)
        new = make_term(zk)
        clock.t = T0 + 61
        with pytest.raises(NotLeader):
            duty_old.tick(old)  # enqueues on the first pod; its state write fails on the server
        assert last_ticks(zk, spec.name, names) == [T0] * 3
        duty_new.tick(new)
        assert last_ticks(zk, spec.name, names) == [T0 + 60] * 3
        # a term known to be over does nothing at all
        old.over.set()
        clock.t = T0 + 121
        with pytest.raises(NotLeader):
            duty_old.tick(old)
    got = queued(topo)
    for name in names:
        assert ticks(got[name]) == [T0 + 60], name
    assert (duty_old.stats["enqueued"], duty_new.stats["enqueued"], duty_new.stats["refused"]) \
        == (1, 2, 1)
    assert last_ticks(zk, spec.name, names) == [T0 + 60] * 3


@pytest.mark.parametrize("check_backends", [True, False])
def test_a_pod_whose_redis_is_down_is_skipped_and_the_others_go_on(
        zk: ZK, topo: Topology, caplog: pytest.LogCaptureFixture, check_backends: bool) -> None:
    TopologyStore(zk).add_pod(Pod("p0", "redis://127.0.0.1:1/0", topo.pods[0].shard_url))
    spec = pc.make_spec(periodic_app.job_a, MINUTE, per_pod=True)
    clock = FakeClock(T0 + 1)
    term = make_term(zk)
    with routing(zk, check_backends) as router:  # unchecked: as `podjobs scheduler` makes it
        router.directory.wait_for(lambda d: "p0" in d.pods(), 10)
        duty = pm.PeriodicDuty(zk, router, [spec], clock=clock)
        duty.tick(term)
        clock.t = T0 + 61
        with caplog.at_level(logging.WARNING, logger="podjobs.scheduler.periodic"):
            duty.tick(term)
    assert "periodic.a: pod p0 unreachable" in caplog.text
    got = queued(topo)
    assert all(ticks(got[n]) == [T0 + 60] for n in topo.pod_names)
    assert last_ticks(zk, spec.name, ["p0", *topo.pod_names]) == [T0, *[T0 + 60] * 3]
    assert duty.stats["unreachable"] == 1


def test_the_demo_reconciliation_reports_planted_inconsistencies_per_pod(
        zk: ZK, topo: Topology, cluster: Any, zk_root: str) -> None:
    from sqlalchemy import create_engine, insert, select

    import podjobs
    from demo import app, reconcile
    from podjobs.pods.router import connect

    engines = {p.name: create_engine(p.shard_url) for p in topo.pods}
    app.metadata.create_all(engines["p1"])
    app.metadata.create_all(engines["p2"])
    app.backfill_metadata.create_all(engines["p1"])
    with engines["p1"].begin() as c:
        c.execute(insert(app.orders), [
            {"tenant": "shop-1", "pod": "p1", "order_no": n, "pid": 1} for n in (1, 2, 2, 4)]
            + [{"tenant": "shop-2", "pod": "p2", "order_no": 1, "pid": 1}])
        c.execute(insert(app.accounts), [
            {"id": 1, "tenant": "shop-1", "fingerprint": app.fingerprint(1), "backfilled": 1},
            {"id": 2, "tenant": "shop-1", "fingerprint": 12345, "backfilled": 1},
            {"id": 3, "tenant": "shop-1", "fingerprint": None, "backfilled": 0}])
    with engines["p2"].begin() as c:
        c.execute(insert(app.orders), [
            {"tenant": "shop-2", "pod": "p2", "order_no": n, "pid": 1} for n in (1, 2)])
    TopologyStore(zk).assign_many({"shop-1": "p1", "shop-2": "p2"})
    client = connect(cluster.topology.zookeeper, zk_root)
    client.router.directory.wait_for(lambda d: d.tenant("shop-2") is not None, 10)
    podjobs.configure(client=client)  # the workers' jobs read the directory through it
    spec = pc.make_spec(reconcile.reconcile, MINUTE, per_pod=True)
    clock = FakeClock(T0 + 1)
    term = make_term(zk)
    workers = [Worker(RedisBackend(p.redis_url),
                      fast_config(pod=p.name, shard_url=p.shard_url, queues=["low"]))
               for p in topo.pods]
    try:
        duty = pm.PeriodicDuty(zk, client.router, [spec], clock=clock)
        duty.tick(term)
        clock.t = T0 + 61
        duty.tick(term)
        for w in workers:
            w.start()

        def reports() -> dict[str, list[Any]]:
            out = {}
            for name, e in engines.items():
                with e.connect() as c:
                    if not e.dialect.has_table(c, "reconcile_reports"):
                        return {}
                    out[name] = list(c.execute(select(reconcile.reconcile_reports)))
            return out

        got = wait_until(lambda: (r := reports()) and all(r.values()) and r, timeout=15,
                         what="a report on every shard")
    finally:
        for w in workers:
            w.stop()
        podjobs.configure(client=podjobs.Client(client.router.backend("p1")))
        for e in engines.values():
            e.dispose()
    assert {n: len(rows) for n, rows in got.items()} == {"p1": 1, "p2": 1, "p3": 1}
    p1 = got["p1"][0]
    kinds = {f["kind"]: f["count"] for f in json.loads(p1.details)}
    assert kinds == {"misplaced": 1, "duplicate_orders": 1, "order_gaps": 1,
                     "bad_fingerprints": 1, "orphans": 1}
    assert (p1.pod, p1.tick, p1.problems) == ("p1", T0 + 60, 5)
    assert "shop-2 orders lives on p2" in json.loads(p1.details)[-1]["examples"]
    assert [(r.pod, r.problems, r.details) for r in got["p2"] + got["p3"]] == [
        ("p2", 0, "[]"), ("p3", 0, "[]")]
