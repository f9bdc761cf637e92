"""One queue backend for a test, by kind: "redis" (pod p1's redis-server), "sqlite" (a file in
the test's tmp dir), "mariadb" (pod p1's shard database on the session's private mariadbd) or
"postgres" (a private server, tests/pgserver.py); each emptied first. `Probe` reads what a test checks the same way on each.

`selected_kinds()`: the kinds the parametrised suites (the `probe` fixture of conftest.py: test_queue,
test_reliability, test_iteration) run on: redis and sqlite by default; PODJOBS_TEST_BACKENDS=all adds
mariadb and postgres, or names a comma-separated list (`make test-sql`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from servers import drop_all_tables, flush_redis

from podjobs import keys
from podjobs.backend import Backend, RedisBackend
from podjobs.fairshare import ready_count
from podjobs.sqlbackend import SqlBackend
from podjobs.worker import Worker
from tests.helpers import REPO, fast_config

KINDS = ("redis", "sqlite", "mariadb", "postgres")
SQL_KINDS = ("sqlite", "mariadb", "postgres")
DEFAULT_KINDS = ("redis", "sqlite")


def trimmed(probe: Probe) -> bool:
    """True for a SQL run of `make test` (no PODJOBS_TEST_BACKENDS): a test variant that only
    repeats another one's path on SQL skips itself there to keep `make test` short."""
    return probe.sql and not os.environ.get("PODJOBS_TEST_BACKENDS")


def selected_kinds() -> tuple[str, ...]:
    """The backends of the parametrised suites, from $PODJOBS_TEST_BACKENDS (see the module doc)."""
    spec = os.environ.get("PODJOBS_TEST_BACKENDS", "").strip()
    if not spec:
        return DEFAULT_KINDS
    if spec == "all":
        return KINDS
    kinds = tuple(k.strip() for k in spec.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"PODJOBS_TEST_BACKENDS={spec!r}: {', '.join(bad)} not one of "
                         f"{', '.join(KINDS)} (or 'all')")
    return kinds


@dataclass
class Probe:
    """What a backend holds, read the same way on each kind."""

    kind: str
    url: str

    #: where the test apps (tests/apps/core_app.py) record what they did: a Redis on every kind
    record_url: str = ""

    @property
    def sql(self) -> bool:
        return self.kind != "redis"

    def backend(self) -> Backend:
        if self.kind == "redis":
            return RedisBackend(self.url)
        return SqlBackend(self.url)

    def inspector(self) -> Any:
        """The pod's Inspector: podjobs.ops.Inspector on Redis, SqlInspector on SQL."""
        if self.kind == "redis":
            from podjobs.ops import Inspector

            return Inspector(RedisBackend(self.url))
        from podjobs.sqlbackend.ops import SqlInspector

        return SqlInspector(SqlBackend(self.url))

    def empty(self) -> bool:
        """Nothing written anywhere (no job, no key, no row)."""
        if self.kind == "redis":
            r = redis.Redis.from_url(self.url)
            try:
                return int(r.dbsize()) == 0
            finally:
                r.close()
        b = SqlBackend(self.url, migrate=False)
        try:
            return not any(b.counts().values())
        finally:
            b.close()

    def target(self) -> list[str]:
        """The worker command's options that name this backend."""
        return ["--redis", self.url] if self.kind == "redis" else ["--database-url", self.url]

    def ready(self, queue: str = "default") -> int:
        """Ready (not reserved) jobs in `queue`."""
        return self.counts(queue)["ready"]

    def ready_payloads(self, queue: str = "default") -> list[str]:
        """The ready jobs of `queue`, oldest first."""
        if self.kind == "redis":
            r = redis.Redis.from_url(self.url)
            try:
                return [m.decode() for m in reversed(r.lrange(keys.queue(queue), 0, -1))]
            finally:
                r.close()
        from sqlalchemy import select

        from podjobs.sqlbackend.tables import ready

        b = SqlBackend(self.url, migrate=False)
        try:
            with b.engine.connect().execution_options(pj_read=True) as c:
                rows = c.execute(select(ready.c.payload).where(
                    ready.c.queue == queue, ready.c.worker == "").order_by(ready.c.seq)).all()
                c.rollback()
            return [r[0] for r in rows]
        finally:
            b.close()

    def in_flight(self) -> int:
        """Jobs reserved by a worker, over every queue."""
        if self.kind == "redis":
            r = redis.Redis.from_url(self.url)
            try:
                return sum(int(r.hlen(k)) for k in r.scan_iter(match="pj:inflight:*"))
            finally:
                r.close()
        b = SqlBackend(self.url, migrate=False)
        try:
            return b.counts()["reserved"]
        finally:
            b.close()

    def n_workers(self) -> int:
        """Registered workers (Redis: the pj:workers set; SQL: pj_workers rows)."""
        if self.kind == "redis":
            r = redis.Redis.from_url(self.url)
            try:
                return int(r.scard(keys.WORKERS))
            finally:
                r.close()
        from sqlalchemy import func, select

        from podjobs.sqlbackend.tables import workers

        b = SqlBackend(self.url, migrate=False)
        try:
            with b.engine.connect().execution_options(pj_read=True) as c:
                n = int(c.execute(select(func.count()).select_from(workers)).scalar() or 0)
                c.rollback()
            return n
        finally:
            b.close()

    def spawn_worker(self, *extra: str, app: str = "tests.apps.core_app", queues: str = "default",
                     concurrency: int = 4, ttl: float = 1.0, log: Path | None = None
                     ) -> subprocess.Popen[bytes]:
        """A worker process on this backend (tests.helpers.spawn_worker's options)."""
        env = dict(os.environ, PODJOBS_RECORD_URL=self.record_url or self.url, PYTHONPATH=str(REPO))
        cmd = [sys.executable, "-m", "podjobs.cli", "worker", *self.target(), "--app", app,
               "--queues", queues, "--concurrency", str(concurrency), "--heartbeat-ttl", str(ttl),
               "--poll-interval", "0.05", "--log-level", "info", *extra]
        out = open(log, "ab") if log else subprocess.DEVNULL
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)

    def counts(self, queue: str = "default") -> dict[str, int]:
        """ready (in `queue`), scheduled, retry, dead, unique."""
        if self.kind == "redis":
            r = redis.Redis.from_url(self.url)
            try:
                return {"ready": int(ready_count(r, queue)),
                        "scheduled": int(r.zcard(keys.scheduled(queue))),
                        "retry": int(r.zcard(keys.retry(queue))), "dead": int(r.zcard(keys.DEAD)),
                        "unique": len(list(r.scan_iter(match="pj:unique:*")))}
            finally:
                r.close()
        b = SqlBackend(self.url, migrate=False)
        try:
            c = b.counts(queue)
        finally:
            b.close()
        return {k: c[k] for k in ("ready", "scheduled", "retry", "dead", "unique")}

    def dead(self) -> list[dict[str, Any]]:
        if self.kind == "redis":
            r = redis.Redis.from_url(self.url)
            try:
                return [json.loads(m) for m in r.zrange(keys.DEAD, 0, -1)]
            finally:
                r.close()
        b = SqlBackend(self.url, migrate=False)
        try:
            return [json.loads(p) for p in b.dead_payloads()]
        finally:
            b.close()

    def push_raw(self, raw: str, queue: str = "default") -> None:
        """A payload written as-is (as an older or broken client would)."""
        if self.kind == "redis":
            r = redis.Redis.from_url(self.url)
            try:
                r.lpush(keys.queue(queue), raw)
            finally:
                r.close()
            return
        b = SqlBackend(self.url, migrate=False)
        try:
            b.enqueue(queue, [raw])
        finally:
            b.close()

    @contextmanager
    def worker(self, **kw: Any) -> Iterator[Worker]:
        w = Worker(self.backend(), fast_config(**kw))
        w.start()
        try:
            yield w
        finally:
            w.stop()
            w.backend.close()


def make_probe(kind: str, cluster: Any, tmp_path: Path, pg: Any = None) -> Probe:
    """`pg`: the module's (PgServer, url) for kind "postgres"."""
    if kind == "postgres":
        server, url = pg
        server.reset()
        flush_redis(cluster.topology.pods[0].redis_url)
        return Probe(kind, url, cluster.topology.pods[0].redis_url)
    pod = cluster.topology.pods[0]
    flush_redis(pod.redis_url)  # the queue on redis, what the test apps record on every kind
    if kind == "redis":
        return Probe(kind, pod.redis_url, pod.redis_url)
    if kind == "sqlite":
        return Probe(kind, f"sqlite:///{tmp_path}/jobs.db", pod.redis_url)
    drop_all_tables(pod.shard_url)
    return Probe(kind, pod.shard_url, pod.redis_url)
