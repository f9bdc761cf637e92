"""`python -m bench.fairness`: fair share inside a pod (README "Fair share").

One private redis-server, one worker process (`--concurrency 10`) on queue "fair". Tenant
"big" floods N no-op jobs (default 100,000, enqueued in bulk before the worker starts);
tenant "small" enqueues one job a second (`--interval`) while the flood drains
(`--flood-tenants K`: the flood split over K tenants, the ring's worst case). Reported per mode,
fair share off (the layout before: one FIFO list per queue) and on, run interleaved
(off, on, on, off; `--rounds 1`: off, on):

- the small tenant's enqueue-to-start p50 / p99 / max (ms);
- drain throughput: the flood's jobs per second (first to last processed), and the Redis
  server's CPU per job over the drain (everything: reserve, acks, the small tenant's calls).

Bounded: N at most 200,000; each drain stops after `--timeout` s. Writes
bench/results/fairness.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def run_once(url: str, fair: bool, n: int, interval: float, timeout: float,
             tenants: int = 1) -> dict[str, Any]:
    import redis

    from bench.app import fair_noop, fair_small
    from podjobs import keys
    from podjobs.backend import RedisBackend
    from podjobs.client import Client, Target
    from podjobs.jobs import Call

    r = redis.Redis.from_url(url)
    r.flushall()
    backend = RedisBackend(url, fair_share=fair)
    client = Client(resolver=lambda tenant, pod: Target("p1", backend))
    step = min(10_000, max(1, n // tenants))
    for t, i in enumerate(range(0, n, step)):
        client.enqueue_many(fair_noop, [((j,), {}) for j in range(i, min(n, i + step))],
                            tenant=f"big{t % tenants}")
    env = dict(os.environ, PYTHONPATH=str(REPO), PODJOBS_BENCH_RECORD_URL=url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "podjobs.cli", "worker", "--redis", url, "--app", "bench.app",
         "--queues", "fair", "--concurrency", "10", "--log-level", "warning"],
        cwd=REPO, env=env)
    processed = keys.stat("processed")
    cpu = r.info("cpu")
    cpu0 = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    first = last = None
    sent = 0
    next_small = time.monotonic()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            if first is not None and now >= next_small:  # from the worker's first job on
                client.enqueue_call(Call(fair_small, (time.time_ns(),), {}), tenant="small")
                sent += 1
                next_small += interval
            done = int(r.get(processed) or 0)
            if first is None and done > 0:
                first = next_small = now
            if done >= n + sent:
                last = now
                break
            time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(30)
        backend.close()
    cpu = r.info("cpu")
    redis_us = (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]) - cpu0) / n * 1e6
    lat = [int(x) / 1e6 for x in r.lrange("bench:fair:lat", 0, -1)]
    drained = int(r.get(processed) or 0) - len(lat)
    span = (last or time.monotonic()) - (first or time.monotonic())
    return {"fair_share": fair, "jobs": n, "flood_tenants": tenants, "small_jobs": len(lat), "small_sent": sent,
            "finished": last is not None,
            "small_p50_ms": round(_pct(lat, 50), 1), "small_p99_ms": round(_pct(lat, 99), 1),
            "small_max_ms": round(max(lat), 1) if lat else None,
            "drain_per_s": round(drained / span) if span > 0 else None,
            "redis_us_per_job": round(redis_us, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000, help="the flood's jobs (1,000 to 200,000)")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between small jobs")
    ap.add_argument("--rounds", type=int, default=2, help="1: off, on; 2: off, on, on, off")
    ap.add_argument("--flood-tenants", type=int, default=1,
                    help="the flood split over this many tenants (1 to 1,000)")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds per drain at most")
    args = ap.parse_args()
    n = max(1000, min(args.n, 200_000))
    from podjobs.infra.ports import free_port
    from podjobs.infra.servers import RedisServer  # noqa: I001
    from podjobs.table import render

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="podjobs-bench-fair-") as d:
        port = free_port()
        server = RedisServer.in_dir(Path(d), port)
        server.start()
        server.wait_ready(10)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            order = [False, True, True, False][: 2 * max(1, min(args.rounds, 2))]
            for fair in order:
                print(f"bench.fairness: fair share {'on' if fair else 'off'}", file=sys.stderr,
                      flush=True)
                runs.append(run_once(url, fair, n, args.interval, args.timeout,
                                     max(1, min(args.flood_tenants, 1000))))
        finally:
            server.stop()

    def mean(fair: bool, field: str) -> float:
        got = [x[field] for x in runs if x["fair_share"] == fair and x[field] is not None]
        return sum(got) / len(got) if got else float("nan")

    head = ["fair share", "small p50 ms", "small p99 ms", "small max ms", "small jobs",
            "drain jobs/s", "Redis CPU us/job"]
    rows = [["on" if x["fair_share"] else "off", f"{x['small_p50_ms']:.1f}",
             f"{x['small_p99_ms']:.1f}", f"{x['small_max_ms']}", str(x["small_jobs"]),
             str(x["drain_per_s"]), f"{x['redis_us_per_job']:.2f}"] for x in runs]
    print(render(head, rows))
    ratio = mean(True, "drain_per_s") / mean(False, "drain_per_s")
    print(f"drain on/off: {ratio:.2f}x")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "fairness.json").write_text(json.dumps({"runs": runs, "drain_ratio": round(ratio, 3)},
                                                  indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
