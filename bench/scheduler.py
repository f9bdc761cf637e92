"""The scheduler: leader failover time, the per-statement guard of migrations, rollout pace.

A 3-pod cluster with MariaDB shards (`Cluster(tmpdir).up(3, db="mysql")`):

1. failover: two `podjobs scheduler` processes; SIGKILL the leader and time until the
   standby's leader node appears, for ZooKeeper session timeouts of 2 s and 4 s
   (the standby can only take over once the dead leader's session expired);
2. guard: the cost of the check a migration runs before every statement
   (`IS_USED_LOCK(...) = CONNECTION_ID()` and the shard's fence, one query), as
   500 single-row UPDATEs on one connection with and without the guard installed;
3. rollout: the five test revisions (tests/apps/migrations, no pauses) on 3 shards,
   canary first then one pod a wave, with pod workers in this process and one scheduler
   (`--interval 0.1`): wall time from start to every shard at head.

Run: `.venv/bin/python -m bench.scheduler`. Writes bench/results/scheduler.json.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from podjobs.infra.cluster import Cluster
from podjobs.infra.topofile import Topology
from podjobs.pods.topology import register_topology
from podjobs.pods.zk import ZK
from podjobs.scheduler.leader import leader_info
from podjobs.scheduler.migrate import close_zk_clients, pod_worker
from podjobs.scheduler.runs import FENCE_TABLE, RunStore, ensure_tables
from podjobs.scheduler.shardlock import ShardLock
from podjobs.table import render
from podjobs.worker import WorkerConfig

REPO = Path(__file__).resolve().parent.parent
MIGRATIONS = str(REPO / "tests" / "apps" / "migrations")
ROUNDS = int(os.environ.get("BENCH_SCHED_ROUNDS", "3"))


def scheduler(spec: str, name: str, session: float, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "podjobs.cli", "scheduler", "--zk", spec, "--id", name,
           "--migrations", MIGRATIONS, "--interval", "0.1", "--session-timeout", str(session)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT)


def wait(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.01)


def failover(topo: Topology, session: float, tmp: Path) -> float:
    root = f"/bench-{uuid.uuid4().hex[:8]}"
    spec = topo.zookeeper + root
    zk = ZK(topo.zookeeper, root).start()
    register_topology(zk, topo)
    a = scheduler(spec, "a", session, tmp / "a.log")
    b = None
    try:
        wait(lambda: (leader_info(zk) or {}).get("id") == "a", 20)
        b = scheduler(spec, "b", session, tmp / "b.log")
        time.sleep(1.5)  # b is in the election
        a.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        wait(lambda: (leader_info(zk) or {}).get("id") == "b", session * 3 + 10)
        return time.monotonic() - t0
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(10)
        zk.delete(zk.path(), recursive=True)
        zk.stop()


def guard_cost(url: str, n: int = 500) -> tuple[float, float]:
    eng = create_engine(url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        ensure_tables(c)
        c.execute(text("CREATE TABLE IF NOT EXISTS bench_guard (id INT PRIMARY KEY, v INT)"))
        c.execute(text("REPLACE INTO bench_guard VALUES (1, 0)"))
        c.execute(text(f"DELETE FROM {FENCE_TABLE}"))
        lock = ShardLock(c, fence=1, holder="bench")
        lock.acquire()
        out = []
        for guarded in (False, True):
            if guarded:
                lock.install()
            t0 = time.perf_counter()
            for _ in range(n):
                c.execute(text("UPDATE bench_guard SET v = v + 1 WHERE id = 1"))
            out.append((time.perf_counter() - t0) / n * 1000)
        lock.release()
        c.execute(text("DROP TABLE bench_guard"))
    eng.dispose()
    return out[0], out[1]


def rollout(topo: Topology, tmp: Path) -> float:
    from tests.apps import migration_probe

    root = f"/bench-{uuid.uuid4().hex[:8]}"
    zk = ZK(topo.zookeeper, root).start()
    register_topology(zk, topo)
    for p in topo.pods:
        e = create_engine(p.shard_url, isolation_level="AUTOCOMMIT")
        with e.connect() as c:
            for t in ("accounts", "invoices", "alembic_version", "mig_probe", "mig_control",
                      "podjobs_migrations", FENCE_TABLE):
                c.execute(text(f"DROP TABLE IF EXISTS {t}"))
            migration_probe.create_tables(c)
            for rev in ("0001", "0002", "0003", "0004", "0005"):
                c.execute(text("INSERT INTO mig_control (rev, pause) VALUES (:r, 0)"), {"r": rev})
        e.dispose()
    cfg = WorkerConfig(queues=["default"], concurrency=2, heartbeat_ttl=2.0, poll_interval=0.05,
                       idle_wait=0.2)
    ws = [pod_worker(zk, p.name, cfg) for p in topo.pods]
    for w in ws:
        w.start()
    s = scheduler(topo.zookeeper + root, "r", 4.0, tmp / "r.log")
    store = RunStore(zk)
    t0 = time.monotonic()
    try:
        wait(lambda: all((r := store.get(p.name, "0005")) is not None and r.state == "complete"
                         for p in topo.pods), 120)
        return time.monotonic() - t0
    finally:
        s.terminate()
        s.wait(10)
        for w in ws:
            w.stop()
        close_zk_clients()
        zk.delete(zk.path(), recursive=True)
        zk.stop()


def main() -> int:
    sys.path.insert(0, str(REPO))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="podjobs-bench-sched-") as d:
        tmp = Path(d)
        cluster = Cluster(tmp / "cluster", die_with_parent=True)
        topo = cluster.up(3, db="mysql", timeout=60)
        try:
            for session in (2.0, 4.0):
                xs = [failover(topo, session, tmp) for _ in range(ROUNDS)]
                results[f"failover_s_session_{session:g}s"] = xs
            plain, guarded = zip(*[guard_cost(topo.pod("p1").shard_url) for _ in range(ROUNDS)],
                                 strict=True)
            results["statement_ms_unguarded"] = list(plain)
            results["statement_ms_guarded"] = list(guarded)
            results["rollout_s_5_revisions_3_shards"] = [rollout(topo, tmp) for _ in range(ROUNDS)]
        finally:
            cluster.down(timeout=10)
    rows = [[k, ", ".join(f"{x:.3f}" for x in v), f"{statistics.median(v):.3f}"]
            for k, v in results.items()]
    print(render(["measure", "rounds", "median"], rows))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scheduler.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
