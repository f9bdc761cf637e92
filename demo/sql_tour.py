"""`make demo-sql`: a short tour of podjobs with no Redis at all (issue 19).

1. `Cluster.up(2, backend="sql")` in a fresh temp dir: ZooKeeper and nothing else; pods p1
   and p2 keep their queues in tables on their own SQLite shards (`Pod.backend` "sql"), or
   with `--db mysql` on databases of a private MariaDB it starts.
   Checks that no redis-server was started.
2. Registers the pods in ZooKeeper, assigns tenant acme to p1 and globex to p2, and
   configures the client with `zk=`: `job.enqueue(..., tenant=)` routes through the
   directory and writes into the tenant's pod's SQLite file (`open_backend` per pod).
3. Enqueues a workload (jobs in demo/sql_app.py): three priority queues, a bulk enqueue,
   a job that fails twice then succeeds (retries), one that ends in the dead set, one
   scheduled 1 s out; prints what each shard holds before any worker runs and `podjobs queues` (every pod).
4. Starts two workers for p1 and one for p2 (`podjobs worker --pod pN --zk ...`), waits until
   everything settled, prints what ran, what retried and what died, and runs `podjobs dead list --pod p1`: the commands read a SQL pod's tables.
5. Stops the workers (SIGTERM) and the cluster, removes the temp dir; exits 0, or 1 after
   printing the end of every log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import podjobs
from demo.common import (
    QUEUES,
    REPO,
    WORKLOAD_TIMEOUT,
    DemoFailed,
    cluster_down,
    die_with_parent,
    heading,
    print_log_tails,
    run_cli,
    short_args,
    stop_workers,
)
from podjobs.infra.cluster import Cluster
from podjobs.infra.topofile import Topology, format_topology
from podjobs.pods.router import PodClient
from podjobs.pods.topology import TopologyStore, register_topology
from podjobs.pods.zk import ZK
from podjobs.sqlbackend import SqlBackend
from podjobs.table import render

ZK_ROOT = "/podjobs"
TENANTS = {"acme": "p1", "globex": "p2"}
#: workers per pod
WORKERS = {"p1": 2, "p2": 1}


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"got {signal.Signals(signum).name}")


def spawn_worker(pod: str, spec: str, record_file: Path, log_file: Path) -> subprocess.Popen[bytes]:
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=pythonpath, PODJOBS_DEMO_RECORD_FILE=str(record_file))
    env.pop("PODJOBS_REDIS_URL", None)
    cmd = [sys.executable, "-m", "podjobs.cli", "worker", "--pod", pod, "--zk", spec,
           "--app", "demo.sql_app", "--queues", QUEUES, "--concurrency", "4",
           "--heartbeat-ttl", "2", "--poll-interval", "0.1"]
    with log_file.open("ab") as log:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent())


def enqueue_workload() -> dict[str, Any]:
    """Everything, lowest priority first; returns the successful runs expected per queue."""
    from demo import sql_app as app

    app.broken_export.enqueue(13, tenant="acme")
    app.nightly_report.enqueue_in(1.0, 42, tenant="acme")
    images = [(i, size) for i in range(1, 6) for size in ("thumb", "large")]
    app.resize_image.enqueue_many(images, tenant="acme")
    app.flaky_sync.enqueue(7, tenant="acme")
    for order in (1, 2, 3):
        app.send_receipt.enqueue(order, tenant="acme")
    app.send_receipt.enqueue(100, tenant="globex")
    print("  acme (p1)    low       broken_export(13)")
    print("               in 1 s    nightly_report(42) (enqueue_in)")
    print(f"               default   resize_image x{len(images)} (one enqueue_many), flaky_sync(7)")
    print("               critical  send_receipt(1), (2), (3)")
    print("  globex (p2)  critical  send_receipt(100)")
    return {"ok": {"critical": 4, "default": len(images) + 1, "low": 1}, "dead": 1}


def read_log(record_file: Path) -> list[dict[str, Any]]:
    try:
        text = record_file.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def show_shards(backends: dict[str, SqlBackend]) -> None:
    rows = [[pod, *b.counts().values()] for pod, b in backends.items()]
    first = next(iter(backends.values())).counts()
    print(render(["pod", *first], rows))


def wait_settled(record_file: Path, backends: dict[str, SqlBackend], expect: dict[str, Any],
                 workers: list[subprocess.Popen[bytes]]) -> float:
    want = sum(expect["ok"].values())
    t0 = time.monotonic()
    while True:
        ok = sum(1 for e in read_log(record_file) if e["ok"])
        counts = [b.counts() for b in backends.values()]
        dead = sum(c["dead"] for c in counts)
        idle = all(c["ready"] == c["reserved"] == c["scheduled"] == c["retry"] == 0
                   for c in counts)
        if ok >= want and dead >= expect["dead"] and idle:
            return time.monotonic() - t0
        for w in workers:
            if w.poll() is not None:
                raise DemoFailed(f"worker pid {w.pid} exited with code {w.returncode}")
        if time.monotonic() - t0 > WORKLOAD_TIMEOUT:
            raise DemoFailed(f"workload not settled after {WORKLOAD_TIMEOUT:.0f} s: {ok}/{want} "
                             f"runs, {dead}/{expect['dead']} dead, idle: {idle}")
        time.sleep(0.05)


def report(record_file: Path, backends: dict[str, SqlBackend], expect: dict[str, Any]) -> None:
    entries = read_log(record_file)
    runs = [e for e in entries if e["ok"]]
    fails = [e for e in entries if not e["ok"]]

    heading("what ran")
    rows = []
    for q in QUEUES.split(","):
        got = [e for e in runs if e["queue"] == q]
        rows.append([q, len(got), expect["ok"][q],
                     ", ".join(sorted({f"{e['pod']} pid {e['pid']}" for e in got}))])
    print(render(["queue", "ran", "expected", "where"], rows))
    for q in QUEUES.split(","):
        if sum(1 for e in runs if e["queue"] == q) != expect["ok"][q]:
            raise DemoFailed(f"queue {q}: not the expected {expect['ok'][q]} successful runs")
    pods = {(e["job"], tuple(e["args"])): e["pod"] for e in runs}
    print(f"routing:    send_receipt(1) ran on {pods.get(('send_receipt', (1,)))} (acme), "
          f"send_receipt(100) on {pods.get(('send_receipt', (100,)))} (globex)")
    if pods.get(("send_receipt", (100,))) != "p2" or pods.get(("send_receipt", (1,))) != "p1":
        raise DemoFailed("a tenant's job ran on another pod than its own")
    sched = next((e for e in runs if e["job"] == "nightly_report"), None)
    if sched is None:
        raise DemoFailed("the scheduled nightly_report(42) never ran")
    print(f"scheduled:  nightly_report(42) ran {sched['waited_ms'] / 1000:.2f} s after "
          f"enqueue_in(1.0)")
    if sched["waited_ms"] < 1000:
        raise DemoFailed("the scheduled job ran before it was due")

    heading("what retried")
    later = {(e["job"], tuple(e["args"]), e["attempt"]) for e in entries}
    print(render(["job", "attempt", "error", "then"],
                 [[f"{e['job']}({short_args(e['args'])})", e["attempt"], e["error"],
                   "retried" if (e["job"], tuple(e["args"]), e["attempt"] + 1) in later else "dead"]
                  for e in fails]))
    flaky = next((e for e in runs if e["job"] == "flaky_sync"), None)
    if flaky is None:
        raise DemoFailed("flaky_sync never succeeded")
    print(f"flaky_sync({short_args(flaky['args'])}) succeeded on attempt {flaky['attempt']}")

    heading("what died (read from pj_dead on p1's shard)")
    dead = [json.loads(p) for p in backends["p1"].dead_payloads()]
    print(render(["id", "job", "attempts", "reason", "error"],
                 [[d.get("id"), f"{str(d.get('job', '')).rsplit('.', 1)[-1]}"
                   f"({short_args(d.get('args', []))})", d.get("attempt"), d.get("dead_reason"),
                   f"{(d.get('error') or {}).get('class')}: {(d.get('error') or {}).get('message')}"]
                  for d in dead]))
    if len(dead) != expect["dead"]:
        raise DemoFailed(f"{len(dead)} dead jobs, expected {expect['dead']}")


def setup_routing(topology: Topology, zk: ZK, spec: str) -> PodClient:
    register_topology(zk, topology)
    TopologyStore(zk).assign_many(TENANTS)
    print("  " + ", ".join(f"{t} -> {p}" for t, p in TENANTS.items()))
    client = podjobs.configure(zk=spec)
    if not isinstance(client, PodClient):
        raise DemoFailed(f"configure(zk=...) returned a {type(client).__name__}, not a PodClient")
    if not client.router.directory.wait_for(lambda d: all(d.tenant(t) for t in TENANTS), 10):
        raise DemoFailed("the client's directory did not see the tenants within 10 s")
    print(f'  podjobs.configure(zk="{spec}"): enqueue(..., tenant=) writes into the '
          f"tenant's pod's database")
    return client


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m demo.sql_tour", description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=("sqlite", "mysql"), default="sqlite",
                        help="the pods' databases: SQLite files (default) or a private MariaDB")
    db = parser.parse_args(argv).db
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGTERM, _on_sigterm)
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="podjobs-demo-sql-"))
    cluster = Cluster(tmp / "cluster", die_with_parent=True)
    record_file = tmp / "runs.jsonl"
    workers: list[subprocess.Popen[bytes]] = []
    backends: dict[str, SqlBackend] = {}
    zk: ZK | None = None
    client: PodClient | None = None
    ok = False
    try:
        heading(f"cluster: 2 pods on {'SQLite' if db == 'sqlite' else 'MariaDB'}, no Redis, in {tmp}")
        t = time.monotonic()
        topology = cluster.up(2, db=db, backend="sql", timeout=60)
        print(f"started in {time.monotonic() - t:.1f} s\n")
        print(format_topology(topology))
        kinds = [s.kind for s in cluster.status()]
        print(f"\nservers started: {', '.join(kinds)}; redis-server: {kinds.count('redis')}")
        if "redis" in kinds or any(p.backend != "sql" or p.redis_url for p in topology.pods):
            raise DemoFailed("a --backend sql cluster started or names a Redis")

        spec = f"{topology.zookeeper}{ZK_ROOT}"
        heading(f"routing (ZooKeeper {spec})")
        zk = ZK(topology.zookeeper, ZK_ROOT).start()
        client = setup_routing(topology, zk, spec)
        backends.update((p.name, SqlBackend(p.shard_url)) for p in topology.pods)

        heading("enqueue (no worker runs yet)")
        expect = enqueue_workload()
        print("\nwhat each pod's shard holds (pj_ready / pj_due / pj_dead / pj_unique rows):")
        show_shards(backends)
        run_cli(["queues", "--zk", spec])

        heading("workers: podjobs worker --pod pN --zk ... (" +
                ", ".join(f"{n} for {p}" for p, n in WORKERS.items()) + ")")
        for pod, n in WORKERS.items():
            for i in range(1, n + 1):
                workers.append(spawn_worker(pod, spec, record_file, tmp / f"worker-{pod}-{i}.log"))
        print("  pids " + ", ".join(str(w.pid) for w in workers))
        secs = wait_settled(record_file, backends, expect, workers)
        print(f"  all settled {secs:.1f} s after the workers were spawned")
        report(record_file, backends, expect)
        print("\nthe shards afterwards:")
        show_shards(backends)
        run_cli(["dead", "list", "--pod", "p1", "--zk", spec])
        ok = True
    except KeyboardInterrupt as exc:
        print(f"\ndemo interrupted ({exc or 'Ctrl-C'})")
    except Exception as exc:
        print(f"\ndemo FAILED: {type(exc).__name__}: {exc}")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not ok:
            print_log_tails(tmp)
        heading("teardown")
        try:
            ok = stop_workers(workers) and ok
            if client is not None:
                client.close()
            if zk is not None:
                zk.stop()
            for b in backends.values():
                b.close()
        except Exception as exc:
            print(f"  teardown FAILED: {type(exc).__name__}: {exc}")
            ok = False
        ok = cluster_down(cluster, tmp) and ok
    print(f"\ndemo-sql {'OK' if ok else 'FAILED'} in {time.monotonic() - t_start:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
