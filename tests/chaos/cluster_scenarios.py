"""Scenarios on the test session's cluster (ZooKeeper, a Redis per pod, MariaDB shards):
a frozen ZooKeeper under routed enqueues and work, and the scheduler's leader killed or
paused during a migration rollout. `ClusterCtx` carries what the pytest fixtures give.

For the rollout the ledger is the shards' own `mig_probe` table (tests/apps/
migration_probe.py: each revision records start and end through its own connection, on
the shard the fault never touches); every (pod, revision) is one expected "job".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine

from podjobs.infra.topofile import Topology
from podjobs.pods.podworker import PodWorker
from podjobs.pods.router import connect
from podjobs.pods.topology import TopologyStore, register_topology
from podjobs.pods.zk import ZK
from podjobs.scheduler.leader import contenders
from podjobs.scheduler.migrate import close_zk_clients
from podjobs.scheduler.runs import RunStore
from tests.apps import migration_probe
from tests.chaos import app, faults
from tests.chaos.checker import Observation
from tests.chaos.harness import Harness
from tests.chaos.ledger import Event
from tests.chaos.scenarios import Size
from tests.helpers import fast_config, wait_until
from tests.test_scheduler import ORDER, SESSION, Schedulers, leader_and_standby, leader_is

FREEZE_S = 4.0


@dataclass
class ClusterCtx:
    topology: Topology
    zk: ZK  # started, rooted at zk_root
    zk_root: str
    zk_pid: int | None  # the session's ZooKeeper server (None: not ours to signal)

    @property
    def zk_spec(self) -> str:
        return self.topology.zookeeper + self.zk_root


def zk_frozen(base: Path, size: Size, cx: ClusterCtx) -> Observation:
    """Routed single enqueues to three pods while ZooKeeper is stopped (SIGSTOP) for 4 s."""
    assert cx.zk_pid is not None, "needs the local ZooKeeper process"
    register_topology(cx.zk, cx.topology)
    tenants = {f"shop-{i}": p.name for i, p in enumerate(cx.topology.pods)}
    TopologyStore(cx.zk).assign_many(tenants)
    with Harness(base, pod_urls=[p.redis_url for p in cx.topology.pods],
                 zk_spec=cx.zk_spec) as h:
        for p in cx.topology.pods:
            h.spawn(pod=p.name, concurrency=2)
        client = connect(cx.topology.zookeeper, cx.zk_root)
        try:
            client.router.directory.wait_for(lambda d: all(d.tenant(t) for t in tenants), 10)
            n, names, acked = max(300, size.jobs // 4), sorted(tenants), []
            frozen_at: float | None = None
            try:
                for i in range(n):
                    if i == n // 3:
                        frozen_at = faults.pause(cx.zk_pid)
                    if frozen_at is not None and i > n // 3:
                        # the fault's length: the rest spread over the freeze (kept: the
                        # enqueues must happen while ZooKeeper is stopped, FREEZE_S long)
                        time.sleep(FREEZE_S / (n - n // 3))
                    try:
                        handle = client.enqueue_call(app.work.call(0.005),
                                                     tenant=names[i % len(names)])
                    except Exception:
                        continue  # refused: not acknowledged
                    h.ledger.record("enq", handle.id)
                    acked.append(handle.id)
            finally:
                faults.resume(cx.zk_pid)
            h.wait_finished(acked, size.timeout)
            return h.observe(allow_duplicates=False)
        finally:
            client.close()


def _rollout(base: Path, cx: ClusterCtx, fault: str) -> Observation:
    register_topology(cx.zk, cx.topology)
    shards = {p.name: p.shard_url for p in cx.topology.pods}
    for url in shards.values():
        e = create_engine(url)
        with e.begin() as c:
            migration_probe.create_tables(c)
        e.dispose()
    workers = [PodWorker(cx.zk, name, fast_config(concurrency=2)) for name in sorted(shards)]
    for w in workers:
        w.start()
    scheds = Schedulers(cx.zk_spec, base)
    try:
        s1 = leader_and_standby(cx.zk, shards, scheds)
        store = RunStore(cx.zk)
        wait_until(lambda: store.get("p1", "0002") is not None, 30, "the rollout under way")
        if fault == "kill9":
            faults.kill9(s1)
        else:
            faults.pause(s1)
        wait_until(lambda: leader_is(cx.zk, "s2"), SESSION * 3 + 5, "s2 takes over")
        if fault == "sigstop":
            wait_until(lambda: len(contenders(cx.zk)) == 1, 10, "s1's election node gone")
            faults.resume(s1)
        wait_until(lambda: all((r := store.get(p, ORDER[-1])) is not None
                               and r.state == "complete" for p in shards), 90, "every shard at head")
    except AssertionError:
        pass  # the ledger shows what did not happen
    finally:
        scheds.stop_all()
        for w in workers:
            w.stop()
        close_zk_clients()
    return Observation(events=_probe_events(shards))


def _probe_events(shards: dict[str, str]) -> list[Event]:
    events = [Event("enq", f"{pod}/{rev}") for pod in shards for rev in ORDER]
    for pod, url in shards.items():
        e = create_engine(url)
        with e.connect() as c:
            rows = migration_probe.events(c)
        e.dispose()
        for rev, what, t in rows:
            if what in ("start", "end"):
                events.append(Event("start" if what == "start" else "finish", f"{pod}/{rev}",
                                    mono=t, wall=t))
    return sorted(events, key=lambda ev: ev.mono)


def scheduler_leader_kill9(base: Path, size: Size, cx: ClusterCtx) -> Observation:
    return _rollout(base, cx, "kill9")


def scheduler_leader_sigstop(base: Path, size: Size, cx: ClusterCtx) -> Observation:
    return _rollout(base, cx, "sigstop")


def sql_mariadb_worker_kill9(base: Path, size: Size, cx: ClusterCtx) -> Observation:
    """Workers killed with SIGKILL mid-drain on the SQL backend (issue 19) in pod p1's
    MariaDB shard: the killed worker's reservations come back when its lease runs out."""
    from tests.chaos.scenarios import _kill_during_drain

    return _kill_during_drain(base, size, "thread", cx.topology.pods[0].shard_url)
