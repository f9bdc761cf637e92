"""`make demo`: start a local 3-pod cluster, run two workloads on it, stop it.

1. Starts ZooKeeper, a Redis per pod (p1..p3) and a private MariaDB with one
   shard database per pod, in a fresh temp dir (every server dies with this
   process), prints the topology and checks that every server answers.
2. Single pod: enqueues a workload on pod p1 (jobs in demo/app.py: three
   priority queues, a bulk enqueue, a chain, a scheduled job, a flaky job that
   retries and a broken one that ends in the dead set), starts two real worker
   processes (`python -m podjobs.cli worker --redis URL`), waits until all of it
   settled and prints what ran (in which order), what retried and what died.
   Then stops those workers (SIGTERM).
3. Tenants on 3 pods: registers the pods in ZooKeeper, assigns shop-1..shop-12
   over p1..p3, creates `orders` on every shard, configures the client with
   `zk=`, shows an unknown tenant refused (`UnknownTenant`, nothing written),
   enqueues one `record_order` per order (shop-N places N), starts one worker
   per pod (`podjobs worker --pod pN --zk ...`), starts the dashboard (`podjobs api`,
   /ui; dashboard.py) and prints its URL and token, waits for every row, prints
   `podjobs tenants list` and `podjobs fleet` and, read back from each shard,
   which pod ran what: every tenant's rows are only in its own pod's shard.
4. A backfill that survives a worker restart: creates `accounts` on p1's shard
   (30,000 rows of shop-1 and 3,000 of shop-4, one bulk insert), enqueues the
   iteration job `BackfillFingerprints` for shop-1 (a batch of rows per item, keyset
   cursor, a checkpoint per batch) and draws its progress (a bar redrawn in place on a
   terminal, a line every 0.5 s otherwise). Part way it stops p1's worker with SIGTERM
   (the job checkpoints, goes back to its queue with its cursor, attempt unchanged),
   starts a new worker for p1 and follows the job from the checkpoint to 100%; then
   reads the shard back: every shop-1 row backfilled exactly once, shop-4 untouched.
5. Migrations as jobs: starts two scheduler processes (`podjobs scheduler
   --migrations demo/migrations`; one leads, one stands by) while orders keep
   being enqueued. The leader rolls the two new revisions out pod by pod (canary
   p1 first, then p2, then p3), one at a time per shard; revision 0002 is a data
   migration whose backfill fills `orders.total_cents`. `podjobs migrations wait`
   prints the progress and exits 0; then `migrations status`, the timeline read
   from each shard's `podjobs_migrations` table, every order enqueued during the
   rollout written, and the periodic reconciliation job's report per pod.
6. With $PODJOBS_DEMO_HOLD set, waits for Ctrl-C (the dashboard stays up); stops the
   schedulers, workers and dashboard with SIGTERM and the cluster, removes the temp
   dir; exits 0, or 1 after printing the end of every server and worker log.

This module is the order and the teardown; each section is a module of demo/: checks.py (1),
single_pod.py (2), tenants.py (3), dashboard.py, backfill.py (4), migrating.py (5), and common.py what they
share (processes, headings, `DemoFailed`). The jobs are in app.py and reconcile.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import sqlalchemy

import podjobs
from demo.backfill import BACKFILL_POD, backfill_section
from demo.checks import check_servers
from demo.common import (
    QUEUES,
    DemoFailed,
    cluster_down,
    heading,
    print_log_tails,
    run_cli,
    spawn_worker,
    stop_workers,
)
from demo.dashboard import hold, start_dashboard
from demo.migrating import RECONCILE_CRON, migrations_section
from demo.single_pod import enqueue_workload, report, wait_settled
from demo.tenants import (
    enqueue_orders,
    refuse_unknown_tenant,
    report_tenants,
    setup_tenants,
    wait_fleet,
    wait_rows,
)
from podjobs.backend import RedisBackend
from podjobs.infra.cluster import Cluster
from podjobs.infra.topofile import format_topology
from podjobs.ops import Inspector
from podjobs.pods.router import PodClient
from podjobs.pods.zk import ZK

N_PODS = 3
N_WORKERS = 2
#: the ZooKeeper root of the pod topology
ZK_ROOT = "/podjobs"


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: the teardown runs now
    raise KeyboardInterrupt(f"got {signal.Signals(signum).name}")


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGTERM, _on_sigterm)
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="podjobs-demo-"))
    cluster = Cluster(tmp / "cluster", die_with_parent=True)
    workers: list[subprocess.Popen[bytes]] = []
    schedulers: list[subprocess.Popen[bytes]] = []
    dashboards: list[subprocess.Popen[bytes]] = []
    os.environ["PODJOBS_DEMO_RECONCILE_CRON"] = RECONCILE_CRON
    zk: ZK | None = None
    pod_client: PodClient | None = None
    engines: dict[str, sqlalchemy.Engine] = {}
    ok = False
    try:
        heading(f"cluster: {N_PODS} pods, MariaDB shards, in {tmp}")
        t = time.monotonic()
        topology = cluster.up(N_PODS, db="mysql", timeout=60)
        print(f"started in {time.monotonic() - t:.1f} s\n")
        print(format_topology(topology))

        heading("checks")
        check_servers(topology)

        p1 = topology.pod("p1")
        url = p1.redis_url
        r = redis.Redis.from_url(url)
        podjobs.configure(url)
        ins = Inspector(RedisBackend(url))

        heading(f"single pod: workload on p1 ({url})")
        expect = enqueue_workload()

        heading(f"{N_WORKERS} workers: podjobs worker --redis URL --queues {QUEUES} --concurrency 4")
        for i in range(1, N_WORKERS + 1):
            workers.append(spawn_worker(["--redis", url], url, tmp / f"worker-{i}.log"))
        print("  pids " + ", ".join(str(w.pid) for w in workers) + f"; logs in {tmp}/worker-N.log")
        secs = wait_settled(r, ins, expect, workers)
        print(f"  all settled {secs:.1f} s after the workers were spawned")

        report(r, ins, expect, url)
        r.close()
        print(f"\nstopping the {N_WORKERS} single-pod workers (the pod workers take over p1):")
        if not stop_workers(workers):
            raise DemoFailed("a single-pod worker did not exit 0 on SIGTERM")
        workers.clear()

        spec = f"{topology.zookeeper}{ZK_ROOT}"
        heading(f"tenants on {N_PODS} pods (ZooKeeper {spec})")
        zk = ZK(topology.zookeeper, ZK_ROOT).start()
        engines.update((p.name, sqlalchemy.create_engine(p.shard_url)) for p in topology.pods)
        plan, pod_client = setup_tenants(topology, zk, engines, spec)
        refuse_unknown_tenant(topology)
        dashboard, ui_url = start_dashboard(spec, tmp)
        dashboards.append(dashboard)
        n_orders = enqueue_orders(topology, plan)

        heading(f"{N_PODS} pod workers: podjobs worker --pod pN --zk {spec}")
        pids = {}
        for name in topology.pod_names:
            w = spawn_worker(["--pod", name, "--zk", spec], url, tmp / f"worker-{name}.log")
            workers.append(w)
            pids[name] = w.pid
        print("  " + ", ".join(f"{n} pid {p}" for n, p in pids.items())
              + f"; logs in {tmp}/worker-pN.log")
        secs = wait_rows(engines, n_orders, workers)
        print(f"  all {n_orders} order rows written {secs:.1f} s after the workers were spawned")
        wait_fleet(zk, topology.pod_names)
        run_cli(["tenants", "list", "--zk", spec])
        run_cli(["fleet", "--zk", spec])
        report_tenants(topology, engines, plan, pids)
        backfill_section(topology, engines, spec, workers,
                         workers[topology.pod_names.index(BACKFILL_POD)], tmp)
        migrations_section(topology, engines, spec, zk, plan, schedulers, tmp)
        hold(ui_url)
        ok = True
    except KeyboardInterrupt as exc:
        print(f"\ndemo interrupted ({exc or 'Ctrl-C'})")
    except Exception as exc:
        print(f"\ndemo FAILED: {type(exc).__name__}: {exc}")
    finally:
        # from here on, SIGTERM/Ctrl-C must not cut the (bounded) teardown short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not ok:
            print_log_tails(tmp)
        heading("teardown")
        try:
            ok = stop_workers(schedulers, "scheduler") and ok
            ok = stop_workers(workers) and ok
            for d in dashboards:  # uvicorn ends by re-raising the SIGTERM it handled: -15 is clean
                d.terminate()
                rc = d.wait(20)
                print(f"  dashboard pid {d.pid}: exit {rc} after SIGTERM")
                ok = ok and rc in (0, -signal.SIGTERM)
            # ZooKeeper sessions and shard connections go before their servers do
            if pod_client is not None:
                pod_client.close()
            if zk is not None:
                zk.stop()
            for engine in engines.values():
                engine.dispose()
        except Exception as exc:
            print(f"  teardown FAILED: {type(exc).__name__}: {exc}")
            ok = False
        ok = cluster_down(cluster, tmp) and ok
    print(f"\ndemo {'OK' if ok else 'FAILED'} in {time.monotonic() - t_start:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
