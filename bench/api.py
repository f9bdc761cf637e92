"""`make bench` part: the HTTP API's enqueue, and what status tracking costs the core.

On servers of its own (ZooKeeper, one pod's redis-server, a SQLite shard):

1. POST /v1/tenants/{tenant}/jobs against `podjobs api` (1 and 2 uvicorn processes), from a
   Python load generator in this process: asyncio, keep-alive HTTP/1.1 connections sending
   one request at a time each; requests per second and latency p50 / p99. GET /healthz
   (no Redis, no auth) on the same server is the framework's ceiling.
2. The core with and without status records, from Python: one enqueue call a job (tracked
   adds a Lua `HSET` to the same script), and a worker process draining 10,000 no-op jobs
   (a tracked job's start and success are batched by the acker like plain acks, but each
   writes its record: two JSON encodings in Python, two cjson decodes and hash writes in
   Lua). Each figure is the better of two alternating runs.

Prints a table and writes bench/results/api.json. The machine is a small shared box: the
load generator and the server share its cores, so read the figures as ratios within a run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.client import Client
from podjobs.fairshare import ready_count
from podjobs.infra.cluster import Cluster
from podjobs.infra.ports import free_port
from podjobs.jobs import Call
from podjobs.table import render

REPO = Path(__file__).resolve().parent.parent
TENANTS = 100
TOKEN = "bench-operator-token-0123456789"
SECONDS = float(os.environ.get("BENCH_API_SECONDS", "8"))
CONNECTIONS = int(os.environ.get("BENCH_API_CONNECTIONS", "16"))
DRAIN = 10_000


def _request(method: str, path: str, body: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _connection(port: int, requests: list[bytes], expect: int, stop_at: float,
                      lat: list[float], warm_until: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    try:
        while True:
            t = time.perf_counter()
            if t >= stop_at:
                return n
            writer.write(requests[n % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            if status != expect:
                raise RuntimeError(f"expected {expect}, got {head[:200]!r}")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            done = time.perf_counter()
            if t >= warm_until:
                lat.append(done - t)
            n += 1
    finally:
        writer.close()


async def _load(port: int, requests: list[bytes], expect: int, seconds: float) -> dict[str, float]:
    lat: list[float] = []
    start = time.perf_counter()
    warm = start + min(1.0, seconds / 5)
    stop_at = warm + seconds
    await asyncio.gather(*(_connection(port, requests, expect, stop_at, lat, warm)
                           for _ in range(CONNECTIONS)))
    lat.sort()
    return {"requests": len(lat), "per_s": len(lat) / seconds,
            "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[int(len(lat) * 0.99) - 1]}


def _serve(zk: str, tokens: Path, workers: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "podjobs.cli", "api", "--port", str(port), "--zk", zk,
         "--tokens", str(tokens), "--app", "bench.app", "--workers", str(workers),
         "--log-level", "warning"], cwd=REPO, env=env, stdout=open(log, "ab"),
        stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"podjobs api exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("podjobs api did not come up")
        time.sleep(0.1)


def bench_http(zk: str, tokens: Path, redis_url: str, workers: int, log: Path) -> dict[str, Any]:
    r = redis.Redis.from_url(redis_url)
    r.flushall()
    proc, port = _serve(zk, tokens, workers, log)
    try:
        posts = [_request("POST", f"/v1/tenants/t{i}/jobs",
                          json.dumps({"job": "bench.noop", "args": [i]}).encode())
                 for i in range(TENANTS)]
        random.shuffle(posts)
        health = asyncio.run(_load(port, [_request("GET", "/healthz")], 200, SECONDS / 2))
        post = asyncio.run(_load(port, posts, 202, SECONDS))
        queued = ready_count(r, "bench")
        records = sum(1 for _ in r.scan_iter(match=keys.status("*"), count=10_000))
        if queued < post["requests"] or records != queued:
            raise RuntimeError(f"{post['requests']} accepted but {queued} queued, {records} records")
    finally:
        proc.terminate()
        proc.wait(30)
    r.flushall()
    return {"workers": workers, "post": post, "healthz": health}


def bench_core(redis_url: str) -> dict[str, float]:
    from bench.app import noop

    r = redis.Redis.from_url(redis_url)
    client = Client(RedisBackend(redis_url))
    out: dict[str, float] = {}
    n = 10_000
    for tracked in (False, True, False, True):  # alternate, so machine noise hits both alike
        r.flushall()
        t = time.perf_counter()
        for i in range(n):
            client.enqueue_call(Call(noop, (i,), track=86400 if tracked else None))
        key = "enqueue_tracked_per_s" if tracked else "enqueue_per_s"
        out[key] = max(out.get(key, 0.0), n / (time.perf_counter() - t))
    for tracked in (False, True, False, True):
        r.flushall()
        for i in range(0, DRAIN):
            client.enqueue_call(Call(noop, (i,), track=86400 if tracked else None))
        key = "drain_tracked_per_s" if tracked else "drain_per_s"
        out[key] = max(out.get(key, 0.0), _drain(redis_url, r))
    r.flushall()
    return out


def _drain(url: str, r: redis.Redis) -> float:
    r.rename(keys.queue("bench"), keys.queue("bench-staging"))
    env = dict(os.environ, PYTHONPATH=str(REPO), PODJOBS_BENCH_RECORD_URL=url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "podjobs.cli", "worker", "--redis", url, "--app", "bench.app",
         "--queues", "bench", "--concurrency", "10", "--batch", "200", "--prefetch", "200",
         "--log-level", "warning"], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 30
        while r.scard(keys.WORKERS) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not register")
            time.sleep(0.01)
        t = time.perf_counter()
        r.rename(keys.queue("bench-staging"), keys.queue("bench"))
        r.lpush(keys.wake("bench"), "1")
        while int(r.get(keys.stat("processed")) or 0) < DRAIN:
            time.sleep(0.002)
        return DRAIN / (time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    from podjobs.pods.topology import TopologyStore, register_topology
    from podjobs.pods.zk import ZK

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="podjobs-bench-api-") as d:
        cluster = Cluster(d, die_with_parent=True)
        topo = cluster.up(1, db="sqlite")
        try:
            root = f"/bench-api-{random.getrandbits(32):x}"
            zk = ZK(topo.zookeeper, root)
            zk.start(10)
            register_topology(zk, topo)
            TopologyStore(zk).assign_many({f"t{i}": "p1" for i in range(TENANTS)})
            zk.stop()
            tokens = Path(d) / "tokens.json"
            tokens.write_text(json.dumps({"tokens": [{"operator": True, "token": TOKEN}]}))
            url = topo.pods[0].redis_url
            for workers in (1, 2):
                print(f"bench: POST enqueue over HTTP, {workers} server process(es), "
                      f"{CONNECTIONS} connections ...", file=sys.stderr, flush=True)
                rows.append(bench_http(topo.zookeeper + root, tokens, url, workers,
                                       Path(d) / "api.log"))
            print("bench: the core with and without status records ...", file=sys.stderr, flush=True)
            core = bench_core(url)
        finally:
            cluster.down(purge=True)
    print(render(["server processes", "POST enqueue /s", "p50 ms", "p99 ms", "GET /healthz /s",
                  "p99 ms"],
                 [[r["workers"], f"{r['post']['per_s']:,.0f}", f"{r['post']['p50_ms']:.2f}",
                   f"{r['post']['p99_ms']:.2f}", f"{r['healthz']['per_s']:,.0f}",
                   f"{r['healthz']['p99_ms']:.2f}"] for r in rows]))
    print(f"\n{CONNECTIONS} keep-alive connections from one Python process on the same machine; every "
          f"POST is a tracked enqueue (status record) routed by tenant over {TENANTS} tenants.\n")
    print(render(["core, from Python", "untracked", "tracked", "cost"],
                 [["enqueue, one call a job /s", f"{core['enqueue_per_s']:,.0f}",
                   f"{core['enqueue_tracked_per_s']:,.0f}",
                   f"{100 * (core['enqueue_tracked_per_s'] / core['enqueue_per_s'] - 1):+.0f}%"],
                  ["drain, 1 worker process /s", f"{core['drain_per_s']:,.0f}",
                   f"{core['drain_tracked_per_s']:,.0f}",
                   f"{100 * (core['drain_tracked_per_s'] / core['drain_per_s'] - 1):+.0f}%"]]))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "api.json").write_text(json.dumps({"http": rows, "core": core}, indent=2))
    print(f"\nwritten: {out / 'api.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
