"""Section 5 of `make demo` (demo/run.py): the scheduler rolls migrations out pod by pod
while orders keep coming; the periodic reconciliation's report."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy

from demo.common import REPO, DemoFailed, die_with_parent, heading, run_cli
from demo.tenants import count_orders, orders_of, wait_rows
from podjobs.infra.topofile import Topology
from podjobs.pods.zk import ZK
from podjobs.table import render

#: the demo's migrations, and the reconciliation's cron (every 2 s, seconds field)
MIGRATIONS_DIR = REPO / "demo" / "migrations"
RECONCILE_CRON = "* * * * * */2"
#: orders enqueued (one every ROLLOUT_ENQUEUE_EVERY_S) while the scheduler migrates
ROLLOUT_ORDERS, ROLLOUT_ENQUEUE_EVERY_S = 120, 0.03
MIGRATION_TIMEOUT = 60.0


def spawn_scheduler(name: str, spec: str, log_file: Path) -> subprocess.Popen[bytes]:
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=pythonpath)
    cmd = [sys.executable, "-m", "podjobs.cli", "scheduler", "--zk", spec, "--id", name,
           "--app", "demo.app,demo.reconcile", "--migrations", str(MIGRATIONS_DIR),
           "--canary", "p1", "--wave", "1", "--queue", "critical", "--interval", "0.2",
           "--session-timeout", "4"]
    with log_file.open("ab") as log:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent())


def stream_cli(argv: list[str], timeout: float) -> int:
    """Run `podjobs ARGV` in a subprocess, printing its output as it comes; its exit code."""
    print(f"\n$ podjobs {' '.join(argv)}")
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    p = subprocess.Popen([sys.executable, "-m", "podjobs.cli", *argv], cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=pythonpath), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    assert p.stdout is not None
    for line in p.stdout:
        print("  " + line.rstrip())
    return p.wait(timeout)


def enqueue_steadily(plan: dict[str, str], n: int, every: float, done: list[int]) -> None:
    """record_order for shop-1..12 in turn, continuing each tenant's order numbers."""
    from demo import app

    tenants = sorted(plan, key=orders_of)
    next_no = {t: orders_of(t) + 1 for t in tenants}
    for i in range(n):
        t = tenants[i % len(tenants)]
        app.record_order.enqueue(next_no[t], tenant=t)
        next_no[t] += 1
        done[0] += 1
        time.sleep(every)


def migration_timeline(engines: dict[str, sqlalchemy.Engine], t0: float) -> list[list[Any]]:
    rows = []
    for pod, engine in engines.items():
        with engine.connect() as conn:
            for rev, state, started, finished in conn.execute(sqlalchemy.text(
                    "SELECT revision, state, started, finished FROM podjobs_migrations ORDER BY id")):
                rows.append([f"{started - t0:6.2f}", f"{(finished or started) - t0:6.2f}", pod, rev,
                             state])
    rows.sort(key=lambda r: float(r[0]))
    return rows


def migrations_section(topology: Topology, engines: dict[str, sqlalchemy.Engine], spec: str,
                       zk: ZK, plan: dict[str, str], schedulers: list[subprocess.Popen[bytes]],
                       tmp: Path) -> None:
    """See the module docstring, step 5."""
    import threading

    from demo import app
    from podjobs.scheduler.revisions import Revisions
    from podjobs.scheduler.runs import RunStore

    revs = Revisions(str(MIGRATIONS_DIR))
    heading(f"migrations as jobs: {len(revs.order)} new revisions, rolled out pod by pod")
    for rev in revs.order:
        doc = revs.get(rev).doc.splitlines()[0]
        print(f"  {rev}: {doc}" + ("  [+ backfill]" if hasattr(revs.get(rev).module, "backfill")
                                   else ""))
    before = count_orders(engines)
    done = [0]
    feeder = threading.Thread(target=enqueue_steadily,
                              args=(plan, ROLLOUT_ORDERS, ROLLOUT_ENQUEUE_EVERY_S, done), daemon=True)
    t0 = time.time()
    feeder.start()
    print(f"\n  enqueuing {ROLLOUT_ORDERS} more orders over "
          f"{ROLLOUT_ORDERS * ROLLOUT_ENQUEUE_EVERY_S:.0f} s while the schedulers run")
    for name in ("sched-a", "sched-b"):
        schedulers.append(spawn_scheduler(name, spec, tmp / f"{name}.log"))
        if name == "sched-a":
            deadline = time.monotonic() + 15
            while not zk.exists(zk.path("scheduler", "leader")):
                if time.monotonic() > deadline or schedulers[0].poll() is not None:
                    raise DemoFailed(f"scheduler sched-a did not lead (see {tmp}/sched-a.log)")
                time.sleep(0.05)
    print(f"  podjobs scheduler --migrations demo/migrations --canary p1 --wave 1 (x2); logs in "
          f"{tmp}/sched-*.log")
    from podjobs.scheduler.leader import contenders

    deadline = time.monotonic() + 15
    while len(contenders(zk)) < 2:
        if time.monotonic() > deadline:
            raise DemoFailed(f"scheduler sched-b did not join the election (see {tmp}/sched-b.log)")
        time.sleep(0.05)
    run_cli(["scheduler", "status", "--zk", spec])
    rc = stream_cli(["migrations", "wait", "--timeout", str(MIGRATION_TIMEOUT), "--interval", "0.3",
                     "--zk", spec], MIGRATION_TIMEOUT + 10)
    if rc != 0:
        raise DemoFailed(f"podjobs migrations wait exited with {rc}")
    run_cli(["migrations", "status", "--zk", spec])
    print("\n  timeline (seconds since the schedulers started; END is the schema step's), from each "
          "shard's podjobs_migrations:")
    print("  " + render(["START", "END", "POD", "REVISION", "STATE"],
                        migration_timeline(engines, t0)).replace("\n", "\n  "))
    store = RunStore(zk)
    for rev in revs.order:
        canary = store.get("p1", rev)
        others = [store.get(p, rev) for p in ("p2", "p3")]
        if canary is None or any(o is None or (o.started_at or 0) < (canary.finished_at or 0)
                                 for o in others):
            raise DemoFailed(f"{rev} started on another pod before the canary p1 finished it")
    feeder.join(timeout=ROLLOUT_ORDERS * ROLLOUT_ENQUEUE_EVERY_S + 10)
    want = before + done[0]
    secs = wait_rows(engines, want, [])
    print(f"\n  all {done[0]} orders enqueued during the rollout were written ({want} rows in all, "
          f"{secs:.1f} s after the last enqueue); the canary finished each revision first")
    for pod, engine in engines.items():
        with engine.connect() as conn:
            missing = conn.execute(sqlalchemy.text(
                "SELECT COUNT(*) FROM orders WHERE total_cents IS NULL AND placed_at < :t"),
                {"t": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0))}).scalar_one()
        if missing:
            raise DemoFailed(f"{pod}: {missing} orders from before the rollout have no total_cents")
    print(f"  every order placed before the rollout has total_cents = order_no * "
          f"{app.PRICE_CENTS} (the 0002 backfill)")
    reconcile_report(engines)


def reconcile_report(engines: dict[str, sqlalchemy.Engine], timeout: float = 15.0) -> None:
    """Wait for one reconciliation run per pod after now and print what it found."""
    since = time.time()
    print(f"\n  the periodic job demo.reconcile ('{RECONCILE_CRON}', per pod) checks each shard:")
    deadline = time.monotonic() + timeout
    for pod, engine in engines.items():
        while True:
            with engine.connect() as conn:
                has = sqlalchemy.inspect(conn).has_table("reconcile_reports")
                row = conn.execute(sqlalchemy.text(
                    "SELECT tick, problems, details FROM reconcile_reports WHERE tick >= :t "
                    "ORDER BY id DESC LIMIT 1"), {"t": since}).first() if has else None
            if row is not None:
                break
            if time.monotonic() > deadline:
                raise DemoFailed(f"no reconciliation report from {pod} within {timeout:.0f} s")
            time.sleep(0.2)
        tick, problems, details = row
        print(f"    {pod}: tick {time.strftime('%H:%M:%S', time.gmtime(tick))} UTC, "
              f"{problems} problem(s)" + (f": {details[:200]}" if problems else " (consistent)"))
