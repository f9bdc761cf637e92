"""`make bench`: the migrations leader over 1, 10 and 100 shards (issue 17 item 3).

One private MariaDB (`Cluster(tmpdir).up(1, db="mysql")`) holds every shard as its own
database (bs000, bs001, ...); the pods share one Redis (a migration job names its pod, so
two pod workers run every pod's jobs). For each size, under a fresh ZooKeeper root:

1. rollout: one trivial revision (CREATE TABLE) over every shard, canary first then waves
   of WAVE, with an in-process `Scheduler` (`--interval 0.1`): wall time from the start to
   every run complete;
2. idle pass: the migrations duty's `tick` once every shard is at head (nothing to do):
   the median and p90 of IDLE_TICKS ticks, and how many shard reads they started (a
   shard is read only when due: shardreads.py), then the cold pass (every shard read, as
   after a new leader) with the reads' own pool.

BENCH_TRACE=1 prints each wave's timeline from its run records (queued, started, finished:
first and last, seconds from the start) and the gap between a wave's last completion and the
next wave's first queueing (how long the leader took to notice and queue).

Before issue 17 (one leader reading every shard in turn each pass): 7.5 ms at 1 shard,
202 ms at 100 (the issue's figures). Run: `.venv/bin/python -m bench.scheduler_scale`.
Writes bench/results/scheduler_scale.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from podjobs.infra.cluster import Cluster, _create_mysql_databases
from podjobs.infra.topofile import Pod, Topology
from podjobs.pods.topology import register_topology
from podjobs.pods.zk import ZK
from podjobs.scheduler import paths
from podjobs.scheduler.leader import Term
from podjobs.scheduler.migrate import close_zk_clients, pod_worker
from podjobs.scheduler.migrations import MigrationsConfig, MigrationsDuty
from podjobs.scheduler.process import Scheduler
from podjobs.scheduler.runs import RunStore
from podjobs.table import render
from podjobs.worker import WorkerConfig

REPO = Path(__file__).resolve().parent.parent
SIZES = [int(x) for x in os.environ.get("BENCH_SHARDS", "1,10,100").split(",")]
WAVE = 10
IDLE_TICKS = 30

REVISION = '''"""trivial"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table("bench_t17", sa.Column("id", sa.Integer, primary_key=True))
'''


class Timed:
    """A duty whose ticks are timed (wraps MigrationsDuty)."""

    def __init__(self, duty: MigrationsDuty) -> None:
        self.duty = duty
        self.name = duty.name
        self.times: list[float] = []

    profile: Any = None

    def tick(self, term: Term) -> None:
        t = time.perf_counter()
        if self.profile is not None:
            self.profile.runcall(self.duty.tick, term)
        else:
            self.duty.tick(term)
        self.times.append(time.perf_counter() - t)


def wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def trace(runs: dict[str, Any], names: list[str], start: float) -> None:
    """Print each wave's timeline (seconds since `start`) from the run records."""
    from podjobs.scheduler.rollout import waves

    rows, last_done = [], None
    for i, wave in enumerate(waves(names, min(names), WAVE)):
        recs = [runs[p]["0001"] for p in wave]
        q = [r.queued_at - start for r in recs]
        s = [(r.started_at or r.queued_at) - start for r in recs]
        f = [(r.finished_at or 0.0) - start for r in recs]
        gap = "" if last_done is None else f"{min(q) - last_done:.2f}"
        rows.append([i, len(wave), gap, f"{min(q):.2f}-{max(q):.2f}", f"{min(s):.2f}-{max(s):.2f}",
                     f"{min(f):.2f}-{max(f):.2f}",
                     f"{statistics.median(b - a for a, b in zip(q, s, strict=True)):.2f}",
                     f"{statistics.median(b - a for a, b in zip(s, f, strict=True)):.2f}"])
        last_done = max(f)
    print(render(["wave", "runs", "gap", "queued", "started", "finished", "q->s med",
                  "s->f med"], rows), file=sys.stderr, flush=True)


def measure(base: Topology, n: int, migrations: str) -> dict[str, Any]:
    mysql = base.pods[0].shard_url.rsplit("/", 1)[0]
    names = [f"bs{uuid.uuid4().hex[:4]}{i:03d}" for i in range(n)]
    _create_mysql_databases(make_url(mysql.replace("mysql://", "mysql+pymysql://", 1)), names)
    redis_url = base.pods[0].redis_url
    topo = Topology(zookeeper=base.zookeeper, db="mysql",
                    pods=[Pod(nm, redis_url, f"{mysql}/{nm}") for nm in names])
    root = f"/bench-sched-scale-{uuid.uuid4().hex[:8]}"
    zk = ZK(base.zookeeper, root).start(10)
    register_topology(zk, topo)
    cfg = WorkerConfig(queues=["default"], concurrency=5, heartbeat_ttl=2.0, poll_interval=0.05,
                       idle_wait=0.2)
    workers = [pod_worker(zk, names[i % n], cfg) for i in range(2)]
    for w in workers:
        w.start()
    duty = MigrationsDuty(zk, MigrationsConfig(directory=migrations, zk_spec=base.zookeeper + root,
                                               wave_size=WAVE))
    timed = Timed(duty)
    sched = Scheduler(zk, [timed], interval=0.1, identity={"id": "bench"})
    stop = threading.Event()
    th = threading.Thread(target=sched.run, args=(stop,), daemon=True)
    store = RunStore(zk)
    # the completions are watched from an in-memory mirror of the run records (was: every
    # pod's records read from ZooKeeper every 20 ms, ~10,000 requests a second at 100 shards,
    # whose CPU in this process competed with the rollout it measured)
    runs_mirror = zk.mirror(zk.path("migrations", "runs"))
    done: set[str] = set()

    def all_complete() -> bool:
        for p in names:
            if p not in done:
                got = runs_mirror.get_json(paths.run(zk, p, "0001"))
                if got is None or got[0].get("state") != "complete":
                    return False
                done.add(p)
        return True

    t0 = time.monotonic()
    th.start()
    try:
        wait(all_complete, 300, f"the rollout over {n} shards")
        rollout_s = time.monotonic() - t0
        if os.environ.get("BENCH_TRACE"):
            trace(store.all(names), names, time.time() - rollout_s)
        time.sleep(1.0)  # the pass that saw the last completion has read its shard
        reads0, k = duty.reader.started, len(timed.times)
        if os.environ.get("BENCH_PROFILE"):
            import cProfile

            timed.profile = cProfile.Profile()
        wait(lambda: len(timed.times) >= k + IDLE_TICKS, 120, "idle ticks")
        if timed.profile is not None:
            import pstats

            prof, timed.profile = timed.profile, None
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        idle = timed.times[k:k + IDLE_TICKS]
        idle_reads = duty.reader.started - reads0
        duty.reader.forget()  # as after a new term: the next pass reads every shard
        k = len(timed.times)
        wait(lambda: len(timed.times) >= k + 2, 60, "a cold pass")
        cold = timed.times[k]
    finally:
        stop.set()
        th.join(30)
        runs_mirror.close()
        for w in workers:
            w.stop()
        duty.close()
        close_zk_clients()
        zk.delete(zk.path(), recursive=True)
        zk.stop()
    return {"shards": n, "rollout_s": rollout_s, "waves": 1 + -(-(n - 1) // WAVE),
            "idle_median_ms": statistics.median(idle) * 1000,
            "idle_p90_ms": sorted(idle)[int(len(idle) * 0.9)] * 1000,
            "idle_shard_reads": idle_reads, "idle_ticks": len(idle),
            "cold_pass_ms": cold * 1000}


def main() -> int:
    sys.path.insert(0, str(REPO))
    rows = []
    with tempfile.TemporaryDirectory(prefix="podjobs-bench-sched-scale-") as d:
        tmp = Path(d)
        mig = tmp / "migrations"
        (mig / "versions").mkdir(parents=True)
        (mig / "versions" / "0001_trivial.py").write_text(REVISION)
        cluster = Cluster(tmp / "cluster", die_with_parent=True)
        base = cluster.up(1, db="mysql", timeout=60)
        try:
            for n in SIZES:
                print(f"bench: the migrations leader over {n} shard(s) ...", file=sys.stderr,
                      flush=True)
                rows.append(measure(base, n, str(mig)))
        finally:
            cluster.down(purge=True)
    print(render(["shards", "rollout (1 revision)", "waves", "idle pass median", "idle p90",
                  "shard reads in idle passes", "cold pass (every shard read)"],
                 [[r["shards"], f"{r['rollout_s']:.1f} s", r["waves"],
                   f"{r['idle_median_ms']:.1f} ms", f"{r['idle_p90_ms']:.1f} ms",
                   f"{r['idle_shard_reads']} in {r['idle_ticks']}",
                   f"{r['cold_pass_ms']:.0f} ms"] for r in rows]))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scheduler_scale.json").write_text(json.dumps(rows, indent=2))
    print(f"\nwritten: {out / 'scheduler_scale.json'}  (targets: idle pass under 50 ms at 100 "
          f"shards, the rollout over 100 under 30 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
