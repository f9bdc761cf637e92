"""`python -m bench.quota`: what tenant quotas cost on the enqueue path (CPU per enqueue).

One process enqueues N jobs one call at a time (and in bulk calls of 1,000) to a private
redis-server through `Client.enqueue_call` with a tenant, and measures this process' CPU and
the Redis server's per job:

- plain: a tenant without a quota (what every tenant paid before quotas: compare with
  `--compare /work/main`, interleaved);
- quota: a tenant with an enqueue rate and a pending cap (limits high enough never to refuse);
- bulk: `enqueue_many`, 1,000 jobs a call, no quota; bulk_quota: the same with a quota.

Prints microseconds per job (client and Redis) and writes bench/results/quota.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KINDS = ("plain", "quota", "bulk", "bulk_quota")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _redis_cpu(r: Any) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(url: str, kind: str, n: int) -> dict[str, float]:
    import redis

    import podjobs
    from podjobs.backend import RedisBackend
    from podjobs.client import Client, Target
    from podjobs.jobs import Call

    @podjobs.job(name="bench.quota.noop")
    def noop(i: int) -> None:
        pass

    backend = RedisBackend(url)
    target = Target("p1", backend)
    if kind.endswith("quota"):
        from podjobs.quota import Quota, TenantQuota

        target = Target("p1", backend, quota=TenantQuota(
            "shop-1", Quota(rate=1e9, burst=10**9, pending=10**9)))
    client = Client(resolver=lambda tenant, pod: target)
    r = redis.Redis.from_url(url)
    r.flushall()
    client.enqueue_call(Call(noop, (0,), {}), tenant="shop-1")  # warm: scripts loaded
    c0, rc0 = _cpu(), _redis_cpu(r)
    if kind.startswith("bulk"):
        for i in range(0, n, 1000):
            client.enqueue_many(noop, [((j,), {}) for j in range(i, i + 1000)], tenant="shop-1")
    else:
        for i in range(n):
            client.enqueue_call(Call(noop, (i,), {}), tenant="shop-1")
    c1, rc1 = _cpu(), _redis_cpu(r)
    backend.close()
    return {"client_us": (c1 - c0) / n * 1e6, "redis_us": (rc1 - rc0) / n * 1e6}


def _child(platform: str, url: str, kind: str, n: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=f"{platform}:{REPO}")
    out = subprocess.run([sys.executable, "-m", "bench.quota", "--one", kind, "--url", url,
                          "-n", str(n)], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=600, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20_000, help="jobs per kind (1,000 to 200,000)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compare", help="another checkout to compare with (interleaved)")
    ap.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = max(1000, min(args.n, 200_000)) // 1000 * 1000
    if args.one:
        print(json.dumps(measure(args.url, args.one, n)))
        return 0
    from podjobs.infra.ports import free_port
    from podjobs.infra.servers import RedisServer  # noqa: I001
    from podjobs.table import render

    sides = {"this": str(REPO / "platform")}
    if args.compare:
        sides["other"] = str(Path(args.compare).resolve() / "platform")
    results: dict[str, dict[str, list[dict[str, float]]]] = {s: {k: [] for k in KINDS} for s in sides}
    with tempfile.TemporaryDirectory(prefix="podjobs-bench-quota-") as d:
        port = free_port()
        server = RedisServer.in_dir(Path(d), port)
        server.start()
        server.wait_ready(10)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            for rnd in range(args.rounds):
                for kind in KINDS:
                    for side, platform in sides.items():
                        if side == "other" and kind.endswith("quota"):
                            continue  # no quotas there
                        print(f"bench.quota: round {rnd + 1} {kind} {side}", file=sys.stderr,
                              flush=True)
                        results[side][kind].append(_child(platform, url, kind, n))
        finally:
            server.stop()

    def best(side: str, kind: str, field: str) -> str:
        got = [m[field] for m in results[side][kind]]
        return f"{min(got):.1f}" if got else "-"

    head = ["kind"] + [f"{s} {f} us/job" for s in sides for f in ("client", "redis")]
    rows = [[k] + [best(s, k, f) for s in sides for f in ("client_us", "redis_us")] for k in KINDS]
    print(render(head, rows))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "quota.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
