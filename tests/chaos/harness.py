"""What every worker scenario needs: a private pod Redis, a ledger, workers, enqueues, the
end-of-run reads, and cleanup of everything it started (by pid).

    with Harness(tmp_path, aof=True) as h:
        w = h.spawn(concurrency=4)
        ids = h.enqueue_many(app.work, 500, 0.01)
        ...fault...
        h.wait_finished(ids, timeout=30)
        obs = h.observe(allow_duplicates=True)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.client import Client
from podjobs.errors import PodjobsError
from podjobs.jobs import Call, JobDef
from podjobs.payload import encode
from podjobs.sqlbackend import SqlBackend
from tests.chaos import ledger as ledger_mod
from tests.chaos.checker import Observation
from tests.chaos.faults import PodRedis
from tests.helpers import REPO, wait_until

TTL = 1.0  # heartbeat TTL of the scenario workers (seconds)


class Harness:
    def __init__(self, base: Path, aof: bool = False, pod_urls: list[str] | None = None,
                 zk_spec: str | None = None, database_url: str | None = None) -> None:
        """A private pod Redis, or (`pod_urls`, `zk_spec`) the pods of a running cluster.
        `database_url`: the queue on the SQL backend there instead (the workers run with
        --database-url; the private Redis stays, unused by the queue)."""
        self.base = base
        self.ledger_dir = base / "ledger"
        self.ledger = ledger_mod.Ledger(self.ledger_dir)
        self._redis = None if pod_urls else PodRedis(base / "redis", aof=aof)
        self.pod_urls = pod_urls or [self.redis.url]
        self.zk_spec = zk_spec
        self.url = self.pod_urls[0]
        self.r = redis.Redis.from_url(self.url, socket_timeout=5)
        self.database_url = database_url
        self.backend: Any = SqlBackend(database_url) if database_url else RedisBackend(self.url)
        self.client = Client(self.backend)
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def redis(self) -> PodRedis:
        assert self._redis is not None, "this harness has no private Redis"
        return self._redis

    # -- workers --------------------------------------------------------------------

    def spawn(self, *extra: str, url: str | None = None, concurrency: int = 4,
              isolation: str = "thread", ttl: float = TTL,
              app: str = "tests.chaos.app", pod: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(REPO), **{ledger_mod.ENV: str(self.ledger_dir)},
                   **(env or {}))
        where = ["--pod", pod, "--zk", self.zk_spec or ""] if pod else ["--redis", url or self.url]
        if self.database_url and not pod and not url:
            where = ["--database-url", self.database_url]
        cmd = [sys.executable, "-m", "podjobs.cli", "worker", *where,
               "--app", app, "--queues", "default", "--concurrency", str(concurrency),
               "--heartbeat-ttl", str(ttl), "--poll-interval", "0.05", "--log-level", "info",
               "--isolation", isolation, *extra]
        log = open(self.base / f"worker-{len(self.procs)}.log", "ab")
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(p)
        return p

    def alive_pids(self) -> frozenset[int]:
        pids = {p.pid for p in self.procs if p.poll() is None}
        for ev in ledger_mod.read(self.ledger_dir):  # process-mode children
            if ev.pid not in pids and _alive(ev.pid):
                pids.add(ev.pid)
        return frozenset(pids)

    # -- enqueues -------------------------------------------------------------------

    def enqueue_many(self, job: JobDef, n: int, *args: Any) -> list[str]:
        """One bulk round trip; every id acknowledged goes to the ledger."""
        handles = self.client.enqueue_many(job, [(list(args), {}) for _ in range(n)])
        for h in handles:
            self.ledger.record("enq", h.id)
        return [h.id for h in handles]

    def enqueue_one(self, call: Call, backend: RedisBackend | None = None) -> str | None:
        """One enqueue; its id goes to the ledger as acknowledged or failed. None if it failed."""
        p = call.payload(time.time_ns() // 1_000_000)
        try:
            (backend or self.backend).enqueue(call.queue_name, [encode(p)])
        except PodjobsError:
            self.ledger.record("enq", p["id"], ok=False)
            return None
        self.ledger.record("enq", p["id"])
        return str(p["id"])

    # -- end of the run -------------------------------------------------------------

    def finished(self) -> set[str]:
        return ledger_mod.finished_ids(self.ledger_dir)

    def wait_finished(self, ids: Iterable[str], timeout: float) -> bool:
        want = set(ids)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: want <= self.finished(), timeout, "every job to finish")
            return True
        return False

    def inflight(self) -> frozenset[str]:
        if self.database_url:  # the SQL backend: rows reserved by a worker
            from sqlalchemy import select

            from podjobs.sqlbackend.tables import ready

            with self.backend.engine.connect().execution_options(pj_read=True) as c:
                ids = {r[0] for r in c.execute(select(ready.c.job_id).where(ready.c.worker != ""))}
                c.rollback()
            return frozenset(ids)
        out: set[str] = set()
        for url in self.pod_urls:
            r = redis.Redis.from_url(url, socket_timeout=5)
            try:
                for k in r.scan_iter(match=keys.inflight("*", "*"), count=1000):
                    out.update(f.decode() for f in r.hkeys(k))
            finally:
                r.close()
        return frozenset(out)

    def observe(self, ttl: float = TTL, **facts: Any) -> Observation:
        first = self.inflight()
        last = first
        if first:  # in flight now: is it still there past the heartbeat TTL + 5 s?
            with contextlib.suppress(AssertionError):  # (still there: that is the finding)
                wait_until(lambda: not self.inflight(), ttl + 5, "the in-flight jobs to settle")
            last = self.inflight()
        return Observation(events=ledger_mod.read(self.ledger_dir), inflight_first=first,
                           inflight_last=last, alive_pids=self.alive_pids(), **facts)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGCONT)
                    p.send_signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(10)
        for pid in self.alive_pids() - {os.getpid()}:  # process-mode children of our workers
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if _alive(pid) else b""
            if b"multiprocessing" in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.backend.close()
        self.r.close()
        if self._redis is not None:
            self._redis.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        return state not in ("Z", "X")
    return False
