"""`make bench` part 2: the cost of routing by tenant.

Routed enqueue (tenant -> pod from the watched directory, over 5,000 tenants)
against enqueue straight to one pod's Redis, one call a job from one process,
with 1, 3 and 5 pods. Rounds alternate between the two so that machine noise
hits both alike. Prints a table and writes bench/results/pods.json.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import podjobs
from podjobs.backend import RedisBackend
from podjobs.infra.cluster import Cluster
from podjobs.table import render

REPO = Path(__file__).resolve().parent.parent
TENANTS = 5_000
PER_ROUND = 500
ROUNDS = 24


@podjobs.job(name="bench.routed", queue="bench")
def routed(i: int) -> None:
    pass


def measure(n_pods: int, cluster: Cluster, topo: Any) -> dict[str, float]:
    from podjobs.pods.router import connect
    from podjobs.pods.topology import TopologyStore, register_topology
    from podjobs.pods.zk import ZK

    root = f"/bench-{n_pods}-{random.getrandbits(32):x}"
    zk = ZK(topo.zookeeper, root)
    zk.start(10)
    sub = type(topo)(zookeeper=topo.zookeeper, pods=topo.pods[:n_pods], db=topo.db)
    register_topology(zk, sub)
    names = [p.name for p in sub.pods]
    tenants = {f"t{i}": names[i % n_pods] for i in range(TENANTS)}
    t = time.perf_counter()
    TopologyStore(zk).assign_many(tenants)
    assign_s = time.perf_counter() - t  # (tests/test_topology.py checks it is batched)
    t = time.perf_counter()
    client = connect(topo.zookeeper, root)
    client.router.directory.wait_for(lambda d: len(d.tenants()) == TENANTS, 30)
    load_s = time.perf_counter() - t  # a new client's directory, every tenant loaded
    direct = podjobs.Client(RedisBackend(sub.pods[0].redis_url))
    order = list(tenants)
    random.shuffle(order)
    direct_wall, routed_wall, direct_cpu, routed_cpu = [], [], [], []
    spread_wall = []
    call = routed.call(0)
    # the same pods in the same order as the routed run, without the directory
    spread = [podjobs.Client(client.router.backend(tenants[t])) for t in order]
    k = j = 0
    for _ in range(ROUNDS):
        w = time.perf_counter()
        for _ in range(PER_ROUND):
            spread[j % TENANTS].enqueue_call(call)
            j += 1
        spread_wall.append(time.perf_counter() - w)
        w, c = time.perf_counter(), time.process_time()
        for _ in range(PER_ROUND):
            direct.enqueue_call(call)
        direct_wall.append(time.perf_counter() - w)
        direct_cpu.append(time.process_time() - c)
        w, c = time.perf_counter(), time.process_time()
        for _ in range(PER_ROUND):
            client.enqueue_call(call, tenant=order[k % TENANTS])
            k += 1
        routed_wall.append(time.perf_counter() - w)
        routed_cpu.append(time.process_time() - c)
    for p in sub.pods:
        RedisBackend(p.redis_url, check=False).redis.flushall()
    client.close()
    zk.stop()
    med = statistics.median
    return {"pods": n_pods, "assign_many_s": assign_s, "directory_load_s": load_s,
            "direct_per_s": PER_ROUND / med(direct_wall), "routed_per_s": PER_ROUND / med(routed_wall),
            "direct_cpu_us": 1e6 * med(direct_cpu) / PER_ROUND,
            "routed_cpu_us": 1e6 * med(routed_cpu) / PER_ROUND,
            "spread_per_s": PER_ROUND / med(spread_wall),
            "routing_cost_pct": 100 * (med(routed_wall) - med(direct_wall)) / med(direct_wall),
            "lookup_cost_pct": 100 * (med(routed_wall) - med(spread_wall)) / med(spread_wall),
            "routing_cpu_pct": 100 * (med(routed_cpu) - med(direct_cpu)) / med(direct_cpu)}


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="podjobs-bench-pods-") as d:
        cluster = Cluster(d, die_with_parent=True)
        topo = cluster.up(5, db="sqlite")
        try:
            for n in (1, 3, 5):
                print(f"bench: routed enqueue over {n} pod(s) ...", file=sys.stderr, flush=True)
                rows.append(measure(n, cluster, topo))
        finally:
            cluster.down(purge=True)
    print(render(["pods", "one pod /s", "same pods, no lookup /s", "routed /s", "vs one pod",
                  "lookup cost", "client CPU/call: one pod", "routed"],
                 [[r["pods"], f"{r['direct_per_s']:,.0f}", f"{r['spread_per_s']:,.0f}",
                   f"{r['routed_per_s']:,.0f}", f"{r['routing_cost_pct']:+.1f}%",
                   f"{r['lookup_cost_pct']:+.1f}%", f"{r['direct_cpu_us']:.1f} us",
                   f"{r['routed_cpu_us']:.1f} us"] for r in rows]))
    print("\n'one pod': every call to pod p1's Redis. 'same pods, no lookup': the routed run's pods in "
          "the same order, backends picked in advance;\nthe difference to 'routed' is the directory "
          "lookup itself, the difference to 'one pod' adds talking to several Redis servers.")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "pods.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{TENANTS:,} tenants: assign_many " + ", ".join(
        f"{r['assign_many_s']:.2f} s" for r in rows) + "; a new client's directory loaded in "
        + ", ".join(f"{r['directory_load_s']:.2f} s" for r in rows) + " (1, 3, 5 pods)")
    print(f"\nwritten: {out / 'pods.json'}  (target: routing cost under 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
