"""One queue backend for a test, by kind: "redis" (pod p1's redis-server), "sqlite" (a file in
the test's tmp dir), "mariadb" (pod p1's shard database on the session's private mariadbd) or
"postgres" (a private server, tests/pgserver.py); each emptied first. `Probe` reads what a test checks the same way on each."""

from __future__ import annotations

import json
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
from tests.helpers import fast_config

KINDS = ("redis", "sqlite", "mariadb", "postgres")
SQL_KINDS = ("sqlite", "mariadb", "postgres")


@dataclass
class Probe:
    """What a backend holds, read the same way on each kind."""

    kind: str
    url: str

    def backend(self) -> Backend:
        if self.kind == "redis":
            return RedisBackend(self.url)
        return SqlBackend(self.url)

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
            c = b.counts()
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
        return Probe(kind, url)
    pod = cluster.topology.pods[0]
    if kind == "redis":
        flush_redis(pod.redis_url)
        return Probe(kind, pod.redis_url)
    if kind == "sqlite":
        return Probe(kind, f"sqlite:///{tmp_path}/jobs.db")
    drop_all_tables(pod.shard_url)
    return Probe(kind, pod.shard_url)
