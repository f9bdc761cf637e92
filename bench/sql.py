"""`make bench` (`python -m bench.sql`): the SQL backend's figures, beside Redis' in core.json.

On SQLite (a file in a temp dir), MariaDB (a private mariadbd; its options are
infra.servers.MARIADB_OPTIONS, innodb-flush-log-at-trx-commit=2 among them) and PostgreSQL
(a private server, tests/pgserver.py, fsync=off; left out, saying why, where none can run):
1. enqueue: one call a job from one process, and bulk (`enqueue_many`, 10,000 a call);
2. drain: BENCH_SQL_DRAIN_JOBS (20,000) no-op jobs with one worker process and with two
   (the jobs are enqueued to a staging queue, the workers start and register, then one
   UPDATE renames the queue: the clock runs from there until every row is acked);
3. latency: enqueue-to-start on an idle worker (the adaptive poll), p50 and p99.

Prints a table and writes bench/results/sql.json.
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
from sqlalchemy import func, select, update

import podjobs
from podjobs.infra.ports import free_port
from podjobs.infra.servers import MariaDBServer, RedisServer
from podjobs.sqlbackend import SqlBackend
from podjobs.sqlbackend.tables import ready, workers
from podjobs.table import render

REPO = Path(__file__).resolve().parent.parent
DRAIN_JOBS = int(os.environ.get("BENCH_SQL_DRAIN_JOBS", "20000"))
LATENCY_SAMPLES = int(os.environ.get("BENCH_SQL_LATENCY_SAMPLES", "300"))


def _count(b: SqlBackend, *where: Any) -> int:
    with b.engine.connect().execution_options(pj_read=True) as c:
        n = int(c.execute(select(func.count()).select_from(ready).where(*where)).scalar() or 0)
        c.rollback()
    return n


def _empty(b: SqlBackend) -> None:
    with b.engine.begin() as c:
        for t in ("pj_ready", "pj_due", "pj_dead", "pj_unique", "pj_workers"):
            c.exec_driver_sql(f"DELETE FROM {t}")


def bench_enqueue(url: str) -> dict[str, float]:
    from bench.app import noop

    b = SqlBackend(url)
    podjobs.configure(client=podjobs.Client(b))
    n = 2_000
    t = time.perf_counter()
    for i in range(n):
        noop.enqueue(i)
    single = n / (time.perf_counter() - t)
    n_bulk = 50_000
    t = time.perf_counter()
    for i in range(0, n_bulk, 10_000):
        noop.enqueue_many([(j,) for j in range(i, i + 10_000)])
    bulk = n_bulk / (time.perf_counter() - t)
    _empty(b)
    return {"enqueue_single_per_s": single, "enqueue_bulk_per_s": bulk}


def _spawn(url: str, queues: str, concurrency: int, extra: list[str],
           record_url: str = "") -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PODJOBS_BENCH_RECORD_URL=record_url)
    return subprocess.Popen(
        [sys.executable, "-m", "podjobs.cli", "worker", "--database-url", url, "--app", "bench.app",
         "--queues", queues, "--concurrency", str(concurrency), "--log-level", "warning", *extra],
        cwd=REPO, env=env)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)


def _wait_workers(b: SqlBackend, n: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        with b.engine.connect().execution_options(pj_read=True) as c:
            got = int(c.execute(select(func.count()).select_from(workers)).scalar() or 0)
            c.rollback()
        if got >= n:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not register")
        time.sleep(0.01)


def bench_drain(url: str, processes: int) -> float:
    from bench.app import noop

    b = SqlBackend(url)
    _empty(b)
    podjobs.configure(client=podjobs.Client(b))
    for i in range(0, DRAIN_JOBS, 10_000):
        noop.enqueue_many([(j,) for j in range(i, min(DRAIN_JOBS, i + 10_000))])
    with b.engine.begin() as c:
        c.execute(update(ready).where(ready.c.queue == "bench").values(queue="bench-staging"))
    procs = [_spawn(url, "bench", 10, ["--batch", "200", "--prefetch", "200"]) for _ in range(processes)]
    try:
        _wait_workers(b, processes)
        t = time.perf_counter()
        with b.engine.begin() as c:
            c.execute(update(ready).where(ready.c.queue == "bench-staging").values(queue="bench"))
        deadline = time.monotonic() + 600
        while _count(b, ready.c.queue == "bench") > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the drain did not finish within 600 s")
            time.sleep(0.005)
        elapsed = time.perf_counter() - t
    finally:
        _stop(procs)
    _empty(b)
    return DRAIN_JOBS / elapsed


def bench_latency(url: str, record_url: str) -> dict[str, float]:
    from bench.app import latency

    r = redis.Redis.from_url(record_url)
    r.delete("bench:latency")
    b = SqlBackend(url)
    _empty(b)
    podjobs.configure(client=podjobs.Client(b))
    procs = [_spawn(url, "latency", 1, [], record_url)]
    try:
        _wait_workers(b, 1)
        time.sleep(0.3)
        for n in range(LATENCY_SAMPLES):
            latency.enqueue(time.time_ns())
            deadline = time.monotonic() + 10
            while r.llen("bench:latency") == n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"latency job {n} did not run within 10 s")
                time.sleep(0.001)
            time.sleep(0.02)  # let the worker go idle (its poll backs off) before the next
    finally:
        _stop(procs)
    lat = sorted(int(x) / 1e6 for x in r.lrange("bench:latency", 0, -1))
    _empty(b)
    return {"latency_p50_ms": statistics.median(lat), "latency_p99_ms": lat[int(len(lat) * 0.99) - 1]}


def _step(name: str) -> None:
    print(f"bench.sql: {name} ...", file=sys.stderr, flush=True)


def run_one(name: str, url: str, record_url: str) -> dict[str, float]:
    res: dict[str, float] = {}
    _step(f"{name}: enqueue")
    res.update(bench_enqueue(url))
    _step(f"{name}: drain, 1 worker process")
    res["drain_1_process_per_s"] = bench_drain(url, 1)
    _step(f"{name}: drain, 2 worker processes")
    res["drain_2_processes_per_s"] = bench_drain(url, 2)
    _step(f"{name}: latency on an idle worker")
    res.update(bench_latency(url, record_url))
    return res


def main() -> int:
    only = sys.argv[1:] or ["sqlite", "mariadb", "postgres"]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="podjobs-bench-sql-") as d:
        rport = free_port()
        rsrv = RedisServer.in_dir(Path(d) / "redis", rport)
        rsrv.start()
        rsrv.wait_ready(10)
        record_url = f"redis://127.0.0.1:{rport}/0"
        try:
            if "sqlite" in only:
                results["sqlite"] = run_one("sqlite", f"sqlite:///{d}/jobs.db", record_url)
            if "mariadb" in only:
                mport = free_port()
                msrv = MariaDBServer.in_dir(Path(d) / "mariadb", mport)
                msrv.start()
                msrv.wait_ready(120)
                try:
                    conn = msrv.connect()
                    conn.cursor().execute("CREATE DATABASE IF NOT EXISTS podjobs_bench")
                    conn.close()
                    results["mariadb"] = run_one(
                        "mariadb", f"mysql+pymysql://root@127.0.0.1:{mport}/podjobs_bench", record_url)
                finally:
                    msrv.stop()
            if "postgres" in only:
                from tests.pgserver import PgServer, missing

                why = missing()
                if why:
                    print(f"bench.sql: PostgreSQL left out: {why}", file=sys.stderr)
                else:
                    pg = PgServer()
                    try:
                        results["postgres"] = run_one("postgres", pg.start(), record_url)
                    finally:
                        pg.stop()
        finally:
            rsrv.stop()
    targets = {"mariadb drain_2_processes_per_s": ">= 2,000", "mariadb latency_p50_ms": "< 50"}
    rows = []
    for backend, res in results.items():
        for k, v in res.items():
            rows.append([backend, k, f"{v:,.1f}" if v < 100 else f"{v:,.0f}",
                         targets.get(f"{backend} {k}", "")])
    print(render(["backend", "measure", "value", "target"], rows))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sql.json").write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {out / 'sql.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
