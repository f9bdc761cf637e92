"""`make bench` part: the transactional outbox (podjobs.transactional) on a real MariaDB shard
and a pod Redis (a private 1-pod cluster).

1. Relay throughput: ROWS committed outbox rows (written first, not timed), then one relay
   moves them all to Redis in batches of BATCH: jobs/s (target >= 10,000 per pod).
2. Commit-to-queued: a relay thread running (idle wait 10 ms), SAMPLES single-job
   transactions one after another; for each, the time from `commit()` returning until a
   blocking pop on the queue gets the job: p50 (target < 50 ms), p90, p99.
Prints a table and writes bench/results/outbox.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy.orm import Session

import podjobs
from podjobs.backend import RedisBackend
from podjobs.db import engine
from podjobs.infra.cluster import Cluster
from podjobs.keys import queue as queue_key
from podjobs.table import render
from podjobs.transactional import Relay, ensure_table

REPO = Path(__file__).resolve().parent.parent
ROWS = 20_000
PER_TX = 500
BATCH = 1000
SAMPLES = 200


@podjobs.job(name="bench.outbox", queue="bench_outbox")
def outboxed(i: int) -> None:
    pass


def throughput(url: str, backend: RedisBackend) -> dict[str, float]:
    for start in range(0, ROWS, PER_TX):
        with Session(engine(url)) as s:
            for i in range(start, start + PER_TX):
                outboxed.enqueue(i, tenant=f"t{i % 50}", db=s)
            s.commit()
    relay = Relay(url, backend, batch=BATCH)
    t = time.perf_counter()
    moved = 0
    while True:
        n = relay.once()
        if not n:
            break
        moved += n
    wall = time.perf_counter() - t
    queued = len(backend.queued("bench_outbox"))
    assert moved == ROWS == queued, (moved, queued)
    backend.redis.delete(queue_key("bench_outbox"))
    return {"rows": ROWS, "seconds": wall, "jobs_per_s": ROWS / wall}


def latency(url: str, backend: RedisBackend) -> dict[str, float]:
    stop = threading.Event()
    relay = Relay(url, backend, batch=BATCH, idle_wait=0.01)
    th = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    th.start()
    waits = []
    try:
        for i in range(SAMPLES):
            with Session(engine(url)) as s:
                h = outboxed.enqueue(i, tenant="t1", db=s)
                s.commit()
                t = time.perf_counter()
            got = backend.redis.brpop([queue_key("bench_outbox")], timeout=10)
            waits.append(time.perf_counter() - t)
            assert got is not None and h.id.encode() in got[1], (h.id, got)
    finally:
        stop.set()
        th.join(10)
    waits.sort()
    q = statistics.quantiles(waits, n=100)
    return {"samples": SAMPLES, "p50_ms": q[49] * 1000, "p90_ms": q[89] * 1000,
            "p99_ms": q[98] * 1000}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="podjobs-bench-outbox-") as d:
        cluster = Cluster(Path(d), die_with_parent=True)
        try:
            topo = cluster.up(1, db="mysql", timeout=120)
            pod = topo.pods[0]
            ensure_table(pod.shard_url)
            backend = RedisBackend(pod.redis_url)
            tp = throughput(pod.shard_url, backend)
            lat = latency(pod.shard_url, backend)
            backend.close()
        finally:
            cluster.down(timeout=10)
    print(render(["outbox relay (1 pod, MariaDB shard)", "figure", "target"], [
        [f"relay throughput ({ROWS:,} rows, batches of {BATCH})", f"{tp['jobs_per_s']:,.0f} jobs/s",
         ">= 10,000 jobs/s"],
        [f"commit-to-queued p50 ({SAMPLES} commits)", f"{lat['p50_ms']:.1f} ms", "< 50 ms"],
        ["commit-to-queued p90 / p99", f"{lat['p90_ms']:.1f} / {lat['p99_ms']:.1f} ms", ""],
    ]))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "outbox.json").write_text(json.dumps({"throughput": tp, "latency": lat}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
