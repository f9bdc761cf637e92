"""`make bench`: `enqueue_all_pods` over 20 and 100 pods (issue 17 item 4).

20 real redis-servers and ZooKeeper (`Cluster(tmpdir).up(20)`); the 100-pod topology puts 5
pods on each server (Redis databases 0-4, so each pod has its own queue keys). One row per
pod count: the calls a second of the parallel fan-out (`pods.router.fan_out`, at most
FAN_OUT_THREADS threads) against the old loop (one `enqueue(pod=...)` after another), in
alternating rounds so that machine noise hits both alike; the median wall time of one
call. Every round's jobs are counted on the pods' Redis afterwards.

Run: `.venv/bin/python -m bench.fanout`. Writes bench/results/fanout.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

import podjobs
from podjobs import keys
from podjobs.fairshare import ready_count
from podjobs.infra.cluster import Cluster
from podjobs.infra.topofile import Pod, Topology
from podjobs.pods.router import FAN_OUT_THREADS, connect, fan_out
from podjobs.pods.topology import register_topology
from podjobs.pods.zk import ZK
from podjobs.table import render

REPO = Path(__file__).resolve().parent.parent
SERVERS = 20
ROUNDS = int(os.environ.get("BENCH_FANOUT_ROUNDS", "10"))
CALLS = 10  # calls per round and mode


@podjobs.job(name="bench.fanout", queue="bench-fanout")
def ping() -> None:
    pass


def topology(base: Topology, n_pods: int) -> Topology:
    pods = []
    for i in range(n_pods):
        src = base.pods[i % len(base.pods)]
        db = i // len(base.pods)
        url = src.redis_url.rsplit("/", 1)[0] + f"/{db}"
        pods.append(Pod(f"f{i:03d}", url, src.shard_url))
    return Topology(zookeeper=base.zookeeper, pods=pods, db=base.db)


def measure(base: Topology, n_pods: int) -> dict[str, Any]:
    root = f"/bench-fanout-{uuid.uuid4().hex[:8]}"
    topo = topology(base, n_pods)
    zk = ZK(base.zookeeper, root).start(10)
    register_topology(zk, topo)
    client = connect(base.zookeeper, root)
    client.router.directory.wait_for(lambda d: len(d.pods()) == n_pods, 30)
    names = client.router.active_pods()
    call = ping.call()

    def loop() -> None:
        for p in names:
            client.enqueue_call(call, pod=p)

    def parallel() -> None:
        fan_out(client, call, names)

    loop()
    parallel()  # connections made, pool threads started
    seq: list[float] = []
    par: list[float] = []
    for _ in range(ROUNDS):
        for fn, out in ((loop, seq), (parallel, par)):
            for _ in range(CALLS):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
    total = 0
    for p in topo.pods:
        r = redis.Redis.from_url(p.redis_url)
        total += int(ready_count(r, "bench-fanout"))
        r.delete(keys.queue("bench-fanout"))
        r.close()
    expected = (2 + 2 * ROUNDS * CALLS)
    assert total == expected * n_pods, (total, expected * n_pods)
    client.close()
    zk.stop()
    return {"pods": n_pods, "servers": SERVERS, "threads": FAN_OUT_THREADS,
            "loop_median_ms": statistics.median(seq) * 1000,
            "parallel_median_ms": statistics.median(par) * 1000,
            "parallel_p90_ms": sorted(par)[int(len(par) * 0.9)] * 1000,
            "loop_calls_per_s": 1 / statistics.median(seq),
            "parallel_calls_per_s": 1 / statistics.median(par),
            "jobs_counted": total}


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="podjobs-bench-fanout-") as d:
        cluster = Cluster(d, die_with_parent=True)
        base = cluster.up(SERVERS, db="sqlite")
        try:
            for n in (20, 100):
                print(f"bench: enqueue_all_pods over {n} pods ...", file=sys.stderr, flush=True)
                rows.append(measure(base, n))
        finally:
            cluster.down(purge=True)
    print(render(["pods", "redis-servers", "one after another", "parallel (median)",
                  "parallel p90", "calls/s before", "calls/s now"],
                 [[r["pods"], r["servers"], f"{r['loop_median_ms']:.1f} ms",
                   f"{r['parallel_median_ms']:.1f} ms", f"{r['parallel_p90_ms']:.1f} ms",
                   f"{r['loop_calls_per_s']:,.0f}", f"{r['parallel_calls_per_s']:,.0f}"]
                  for r in rows]))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "fanout.json").write_text(json.dumps(rows, indent=2))
    print(f"\nwritten: {out / 'fanout.json'}  (target: 100 pods well under a second)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
