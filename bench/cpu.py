"""`python -m bench.cpu`: CPU time the platform spends per drained job, in process.

Wall-clock drain rates on a small shared machine move by 30% between runs; CPU time per
job (this process' user+system time, and the Redis server's, divided by the jobs) moves
far less, so a change to the job path is judged by it. One worker runs in this process
on a private redis-server and drains N jobs of each kind:

- plain: a no-op job (the path every job takes);
- metrics: the same with `--metrics-port` (the metrics link, podjobs.chain.metrics);
- tracked: a no-op job enqueued with status tracking (podjobs.status);
- chained: a no-op job with one follow-up (the follow-up counts as a job too);
- failing: a job that raises and is retried later (the failure path, retries settled).

Prints microseconds per job (worker process and Redis) and writes bench/results/cpu.json.
`--compare DIR` runs the same kinds against another checkout's podjobs (its platform/
directory) in a child process, interleaved, and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KINDS = ("plain", "metrics", "tracked", "chained", "failing")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _redis_cpu(r: Any) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(url: str, kind: str, n: int) -> dict[str, float]:
    """Drain n jobs of `kind` with one in-process worker: CPU microseconds per job."""
    import redis

    import podjobs
    from podjobs import keys
    from podjobs.backend import RedisBackend
    from podjobs.worker import Worker, WorkerConfig

    @podjobs.job(name="cpu.noop", queue="cpu", retries=3)
    def noop(i: int) -> None:
        pass

    @podjobs.job(name="cpu.fail", queue="cpu", retries=1,
                 backoff=lambda attempt: 3600.0)
    def fail(i: int) -> None:
        raise ValueError("bench failure")

    r = redis.Redis.from_url(url)
    r.flushall()
    podjobs.configure(url)
    jobs = n
    if kind in ("plain", "metrics"):
        for i in range(0, n, 10_000):
            noop.enqueue_many([(j,) for j in range(i, min(n, i + 10_000))])
    elif kind == "tracked":
        for i in range(n):
            c = noop.call(i)
            c.track = 600
            c.enqueue()
    elif kind == "chained":
        for i in range(n // 2):
            noop.call(i).then(noop.call(-i)).enqueue()
        jobs = (n // 2) * 2
    elif kind == "failing":
        for i in range(0, n, 10_000):
            fail.enqueue_many([(j,) for j in range(i, min(n, i + 10_000))])
    backend = RedisBackend(url)
    staging = keys.queue("cpu") + ":staging"
    r.rename(keys.queue("cpu"), staging)
    extra: dict[str, Any] = {"metrics_port": 0} if kind == "metrics" else {}
    w = Worker(backend, WorkerConfig(queues=["cpu"], concurrency=10, batch=200, prefetch=200,
                                     poll_interval=3600.0, **extra))
    w.start()
    counter = keys.stat("failed" if kind == "failing" else "processed")
    c0, rc0, t0 = _cpu(), _redis_cpu(r), time.perf_counter()
    r.rename(staging, keys.queue("cpu"))
    r.lpush(keys.wake("cpu"), "1")
    deadline = time.monotonic() + 300
    while int(r.get(counter) or 0) < jobs:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{kind}: drained {r.get(counter)} of {jobs} in 300 s")
        time.sleep(0.005)
    c1, rc1, t1 = _cpu(), _redis_cpu(r), time.perf_counter()
    w.stop()
    backend.close()
    return {"worker_us": (c1 - c0) / jobs * 1e6, "redis_us": (rc1 - rc0) / jobs * 1e6,
            "wall_per_s": jobs / (t1 - t0)}


def _child(platform: str, url: str, kind: str, n: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=f"{platform}:{REPO}")
    out = subprocess.run([sys.executable, "-m", "bench.cpu", "--one", kind, "--url", url, "-n", str(n)],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20_000, help="jobs per kind (at most 200,000)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compare", help="another checkout to compare with (interleaved)")
    ap.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = max(1000, min(args.n, 200_000))
    if args.one:
        print(json.dumps(measure(args.url, args.one, n)))
        return 0
    from podjobs.infra.ports import free_port
    from podjobs.infra.servers import RedisServer  # noqa: I001
    from podjobs.table import render

    here = str(REPO / "platform")
    sides = {"this": here}
    if args.compare:
        sides["other"] = str(Path(args.compare).resolve() / "platform")
    results: dict[str, dict[str, list[dict[str, float]]]] = {s: {k: [] for k in KINDS} for s in sides}
    with tempfile.TemporaryDirectory(prefix="podjobs-bench-cpu-") as d:
        port = free_port()
        server = RedisServer.in_dir(Path(d), port)
        server.start()
        server.wait_ready(10)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            for rnd in range(args.rounds):
                for kind in KINDS:
                    for side, platform in sides.items():
                        if side == "other" and kind == "metrics":
                            continue  # an older checkout may not have the metrics link
                        print(f"bench.cpu: round {rnd + 1} {kind} {side}", file=sys.stderr, flush=True)
                        results[side][kind].append(_child(platform, url, kind, n))
        finally:
            server.stop()

    def best(side: str, kind: str, field: str) -> float:
        return min(m[field] for m in results[side][kind])

    rows = []
    for kind in KINDS:
        row = [kind]
        for side in sides:
            if not results[side][kind]:
                row += ["-", "-"]
                continue
            row += [f"{best(side, kind, 'worker_us'):.1f}", f"{best(side, kind, 'redis_us'):.1f}"]
        if args.compare and not results["other"][kind]:
            row.append(f"{best('this', kind, 'worker_us') / best('other', 'plain', 'worker_us'):.2f} (of plain)")
        elif args.compare:
            row.append(f"{best('this', kind, 'worker_us') / best('other', kind, 'worker_us'):.2f}")
        rows.append(row)
    head = ["kind"]
    for side in sides:
        head += [f"{side} worker us/job", f"{side} redis us/job"]
    if args.compare:
        head.append("worker ratio this/other")
    print(render(head, rows))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
