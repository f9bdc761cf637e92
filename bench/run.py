"""`make bench`: podjobs' core figures on a private redis-server, in one run.

1. enqueue: one call a job from one process, and bulk (`enqueue_many`);
2. drain: 50,000 no-op jobs with one worker process and with two;
3. latency: enqueue-to-start on an idle worker, p50 and p99;
4. Redis memory per queued no-op job beyond its payload;
5. the ceiling: redis-benchmark's LPUSH and RPOP on the same server.

Prints a table and writes bench/results/core.json. Compare ratios within one
run: the machine is small and shared.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

import podjobs
from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.infra.ports import free_port
from podjobs.infra.servers import RedisServer
from podjobs.table import render

REPO = Path(__file__).resolve().parent.parent
DRAIN_JOBS = int(os.environ.get("BENCH_DRAIN_JOBS", "50000"))


def bench_enqueue(url: str) -> dict[str, float]:
    from bench.app import noop

    r = redis.Redis.from_url(url)
    podjobs.configure(url)
    n = 20_000
    t = time.perf_counter()
    for i in range(n):
        noop.enqueue(i)
    single = n / (time.perf_counter() - t)
    r.flushall()
    n_bulk = 200_000
    t = time.perf_counter()
    for i in range(0, n_bulk, 10_000):
        noop.enqueue_many([(j,) for j in range(i, i + 10_000)])
    bulk = n_bulk / (time.perf_counter() - t)
    r.flushall()
    return {"enqueue_single_per_s": single, "enqueue_bulk_per_s": bulk}


def _spawn(url: str, queues: str, concurrency: int, extra: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PODJOBS_BENCH_RECORD_URL=url)
    return subprocess.Popen(
        [sys.executable, "-m", "podjobs.cli", "worker", "--redis", url, "--app", "bench.app",
         "--queues", queues, "--concurrency", str(concurrency), "--log-level", "warning", *extra],
        cwd=REPO, env=env)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)


def bench_drain(url: str, processes: int) -> float:
    from bench.app import noop

    r = redis.Redis.from_url(url)
    r.flushall()
    podjobs.configure(url)
    # fill a staging queue, start the workers, then swap it in at once
    staging = "bench-staging"
    for i in range(0, DRAIN_JOBS, 10_000):
        noop.enqueue_many([(j,) for j in range(i, min(DRAIN_JOBS, i + 10_000))])
    r.rename(keys.queue("bench"), keys.queue(staging))
    procs = [_spawn(url, "bench", 10, ["--batch", "200", "--prefetch", "200"]) for _ in range(processes)]
    deadline = time.monotonic() + 30
    while r.scard(keys.WORKERS) < processes:
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not register")
        time.sleep(0.01)
    t = time.perf_counter()
    r.rename(keys.queue(staging), keys.queue("bench"))
    r.lpush(keys.wake("bench"), "1")
    while int(r.get(keys.stat("processed")) or 0) < DRAIN_JOBS:
        time.sleep(0.002)
    elapsed = time.perf_counter() - t
    _stop(procs)
    return DRAIN_JOBS / elapsed


def bench_latency(url: str, samples: int = 1000) -> dict[str, float]:
    from bench.app import latency

    r = redis.Redis.from_url(url)
    r.flushall()
    podjobs.configure(url)
    procs = [_spawn(url, "latency", 1, [])]
    while r.scard(keys.WORKERS) < 1:
        time.sleep(0.01)
    time.sleep(0.3)
    for n in range(samples):
        latency.enqueue(time.time_ns())
        # wait for the job to run so the worker is idle again before the next one
        deadline = time.monotonic() + 10
        while r.llen("bench:latency") == n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"latency job {n} did not run within 10 s")
        time.sleep(0.001)
    lat = sorted(int(x) / 1e6 for x in r.lrange("bench:latency", 0, -1))
    _stop(procs)
    return {"latency_p50_ms": statistics.median(lat), "latency_p99_ms": lat[int(len(lat) * 0.99) - 1]}


def bench_memory(url: str, n: int = 100_000) -> dict[str, float]:
    from bench.app import noop

    r = redis.Redis.from_url(url)
    r.flushall()
    podjobs.configure(url)
    noop.enqueue(0)  # create the queue so its fixed cost is not counted
    before = int(r.info("memory")["used_memory"])
    for i in range(0, n, 10_000):
        noop.enqueue_many([(j,) for j in range(i, i + 10_000)])
    after = int(r.info("memory")["used_memory"])
    payload_bytes = sum(len(p) for p in r.lrange(keys.queue("bench"), 0, n - 1))
    r.flushall()
    return {"redis_bytes_per_job": (after - before) / n,
            "payload_bytes_per_job": payload_bytes / n,
            "overhead_bytes_per_job": (after - before - payload_bytes) / n}


def bench_ceiling(port: int) -> dict[str, float]:
    out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "lpush,rpop",
                          "-n", "200000", "-q"], capture_output=True, text=True, timeout=120).stdout
    res: dict[str, float] = {}
    for line in out.replace("\r", "\n").splitlines():
        if "requests per second" in line:
            name, rest = line.split(":", 1)
            res[f"redis_benchmark_{name.strip().lower()}_per_s"] = float(rest.split()[0])
    return res


def _step(name: str) -> None:
    print(f"bench: {name} ...", file=sys.stderr, flush=True)


def main() -> int:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="podjobs-bench-") as d:
        port = free_port()
        server = RedisServer.in_dir(Path(d), port)
        server.start()
        server.wait_ready(10)
        url = f"redis://127.0.0.1:{port}/0"
        RedisBackend(url)
        try:
            _step("enqueue")
            results.update(bench_enqueue(url))
            _step("drain, 1 worker process")
            results["drain_1_process_per_s"] = bench_drain(url, 1)
            _step("drain, 2 worker processes")
            results["drain_2_processes_per_s"] = bench_drain(url, 2)
            _step("latency on an idle worker")
            results.update(bench_latency(url))
            _step("memory per queued job")
            results.update(bench_memory(url))
            _step("redis-benchmark ceiling")
            results.update(bench_ceiling(port))
        finally:
            server.stop()
    targets = {
        "enqueue_single_per_s": ">= 7,500", "enqueue_bulk_per_s": ">= 150,000",
        "drain_2_processes_per_s": ">= 25,000", "latency_p50_ms": "< 1", "latency_p99_ms": "< 2",
        "overhead_bytes_per_job": "< 200",
    }
    print(render(["measure", "value", "target"],
                 [[k, f"{v:,.1f}" if v < 100 else f"{v:,.0f}", targets.get(k, "")] for k, v in results.items()]))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "core.json").write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {out / 'core.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
