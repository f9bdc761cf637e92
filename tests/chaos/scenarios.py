"""The worker and Redis scenarios: each runs one fault on real processes and returns what
the checker needs (an `Observation`). Sizes come from `Size` (quick: `make test`, full:
`make chaos`). Every wait is on an event (ledger counts, Redis reads) with a bound.

To add a scenario: write `def my_fault(base: Path, size: Size) -> Observation` here (or
in cluster_scenarios.py when it needs ZooKeeper or the shards), using `Harness`, and add a
`Spec` for it to `registry.SPECS`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.gateway import script
from podjobs.ids import new_id
from tests.chaos import app, faults
from tests.chaos import ledger as ledger_mod
from tests.chaos.checker import Observation
from tests.chaos.harness import TTL, Harness
from tests.chaos.proxy import Proxy
from tests.helpers import wait_until

SHUTDOWN_TIMEOUT = 1.0
EXIT_LIMIT = SHUTDOWN_TIMEOUT + 5
#: Redis down past 2 x TTL and past redis-py's own retries of a command (about 4 s)
DOWN_S = max(2 * TTL, 8.0) + 0.5


@dataclass(frozen=True)
class Size:
    jobs: int
    kills: int
    runs: int
    timeout: float

    @classmethod
    def quick(cls) -> Size:
        return cls(jobs=300, kills=2, runs=1, timeout=15)

    @classmethod
    def full(cls) -> Size:
        return cls(jobs=4000, kills=8, runs=3, timeout=60)


def _finishes(h: Harness) -> int:
    return ledger_mod.count(h.ledger_dir, "finish")


def _kill_during_drain(base: Path, size: Size, isolation: str,
                       database_url: str | None = None) -> Observation:
    n = size.jobs if isolation == "thread" else max(100, size.jobs // 4)
    with Harness(base, database_url=database_url) as h:
        workers = [h.spawn(concurrency=4, isolation=isolation) for _ in range(2)]
        ids = h.enqueue_many(app.work, n, 0.01)
        rng = random.Random(11)
        for k in range(1, size.kills + 1):
            target = n * k // (size.kills + 1)
            wait_until(lambda t=target: _finishes(h) >= t, size.timeout, f"{target} finishes")
            victim = workers.pop(rng.randrange(len(workers)))
            faults.kill9(victim)
            workers.append(h.spawn(concurrency=4, isolation=isolation))
        h.wait_finished(ids, size.timeout)
        return h.observe(allow_duplicates=True)


def worker_kill9_thread(base: Path, size: Size) -> Observation:
    return _kill_during_drain(base, size, "thread")


def worker_kill9_process(base: Path, size: Size) -> Observation:
    return _kill_during_drain(base, size, "process")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def supervised_worker_kill9(base: Path, size: Size) -> Observation:
    """`worker --processes 2`: kill -9 one of the supervisor's workers at each step; the
    supervisor starts another in its slot (nothing started by the scenario) and the killed
    one's jobs come back as any dead worker's."""
    n = size.jobs
    with Harness(base) as h:
        sup = h.spawn("--processes", "2", concurrency=4)
        wait_until(lambda: len(_children(sup.pid)) == 2, size.timeout, "two supervised workers")
        ids = h.enqueue_many(app.work, n, 0.01)
        rng = random.Random(13)
        killed: set[int] = set()
        for k in range(1, size.kills + 1):
            target = n * k // (size.kills + 1)
            wait_until(lambda t=target: _finishes(h) >= t, size.timeout, f"{target} finishes")
            live = [c for c in _children(sup.pid) if c not in killed]
            victim = live[rng.randrange(len(live))]
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
            wait_until(lambda: len([c for c in _children(sup.pid) if c not in killed]) == 2,
                       size.timeout, "the supervisor to start a worker in the killed one's slot")
        h.wait_finished(ids, size.timeout)
        obs = h.observe(allow_duplicates=True)
        sup.send_signal(signal.SIGTERM)  # its workers stop before the harness stops Redis
        code = sup.wait(30)
        assert code == 0, f"the supervisor stopped with {code}: {(base / 'worker-0.log').read_text()[-1500:]}"
        return obs


def sql_sqlite_worker_kill9(base: Path, size: Size) -> Observation:
    """The same kills on the SQL backend (issue 19), SQLite: recovered by lease expiry."""
    return _kill_during_drain(base, size, "thread", f"sqlite:///{base}/jobs.db")


def _zombie_inflight(h: Harness, pid: int) -> set[str]:
    """The worker ids (host:pid:token[.generation]) of process `pid` holding jobs in flight."""
    out = set()
    for k in h.r.scan_iter(match="pj:inflight:*"):
        parts = k.decode().split(":")  # pj, inflight, host, pid, token[.n], queue
        if parts[3] == str(pid) and h.r.hlen(k):
            out.add(":".join(parts[2:5]))
    return out


def worker_sigstop_zombie(base: Path, size: Size) -> Observation:
    """A worker with jobs buffered is paused past its heartbeat TTL, reaped, resumed; a few
    cycles (the re-runs after a resume depend on which thread wakes first)."""
    return _zombie(base, size, "thread", 16)


def worker_sigstop_zombie_process(base: Path, size: Size) -> Observation:
    """The same with process isolation: only the worker (the parent) is paused; its children
    finish what they run and wait for it."""
    return _zombie(base, size, "process", 4)


def _zombie(base: Path, size: Size, isolation: str, concurrency: int) -> Observation:
    cycles = 3 if size.runs == 1 else 6
    with Harness(base) as h:
        zombie = h.spawn("--prefetch", "64", concurrency=concurrency, isolation=isolation)
        wait_until(lambda: h.r.scard(keys.WORKERS) == 1, 20, "the first worker to register")
        ids = h.enqueue_many(app.work, 150 * cycles, 0.2)
        h.spawn(concurrency=4)
        reaped: dict[str, float] = {}
        for _ in range(cycles):
            wait_until(lambda: _zombie_inflight(h, zombie.pid), size.timeout,
                       "the paused-to-be worker holding jobs")
            faults.pause(zombie)
            paused = _zombie_inflight(h, zombie.pid)  # the generation(s) holding jobs now
            wait_until(lambda: not _zombie_inflight(h, zombie.pid), size.timeout,
                       "the paused worker to be reaped")
            t = faults.resume(zombie)
            reaped.update({wid: t for wid in paused})
        h.wait_finished(ids, size.timeout)
        return h.observe(allow_duplicates=True, allow_overlap=True, zombie_reaped=reaped)


def _sigterm(base: Path, size: Size, isolation: str) -> Observation:
    exits: list[float] = []
    with Harness(base) as h:
        ids: list[str] = []
        for _ in range(size.runs):
            w = h.spawn("--shutdown-timeout", str(SHUTDOWN_TIMEOUT), concurrency=4,
                        isolation=isolation)
            ids += h.enqueue_many(app.work, 4, 3.0)  # outlive the shutdown timeout
            ids += h.enqueue_many(app.work, 40, 0.05)
            started = ledger_mod.count(h.ledger_dir, "start")
            wait_until(lambda s=started: ledger_mod.count(h.ledger_dir, "start") >= s + 4,
                       size.timeout, "long jobs running")
            exits.append(faults.sigterm_exit(w, EXIT_LIMIT))
        h.spawn(concurrency=8, isolation=isolation)
        h.wait_finished(ids, size.timeout)
        return h.observe(allow_duplicates=True, exit_times=exits, exit_limit=EXIT_LIMIT)


def worker_sigterm_thread(base: Path, size: Size) -> Observation:
    return _sigterm(base, size, "thread")


def worker_sigterm_process(base: Path, size: Size) -> Observation:
    return _sigterm(base, size, "process")


def redis_kill9_aof(base: Path, size: Size) -> Observation:
    """Single enqueues and two workers while the pod's Redis (appendfsync always) is killed
    with SIGKILL and restarted on the same port."""
    with Harness(base, aof=True) as h:
        for _ in range(2):
            h.spawn(concurrency=4)
        n = max(300, size.jobs // 2)
        kills = {n * k // (size.kills + 1) for k in range(1, size.kills + 1)}
        acked: list[str] = []
        for i in range(n):
            if i in kills:
                h.redis.kill9()
                time.sleep(0.3)  # the fault: Redis stays down a moment (not a wait for state)
                h.redis.restart()
            jid = h.enqueue_one(app.work.call(0.005))
            if jid:
                acked.append(jid)
        h.wait_finished(acked, size.timeout)
        return h.observe(allow_duplicates=True)


def redis_down_past_ttl(base: Path, size: Size) -> Observation:
    """One worker, 2 s jobs; Redis down for longer than twice the heartbeat TTL."""
    with Harness(base, aof=True) as h:
        h.spawn(concurrency=4)
        ids = h.enqueue_many(app.work, 8, 2.0)  # 4 run, 4 wait in the worker's inbox
        wait_until(lambda: ledger_mod.count(h.ledger_dir, "start") >= 4, 20, "4 jobs running")
        h.redis.kill9()
        time.sleep(DOWN_S)  # the fault's length
        h.redis.restart()
        h.wait_finished(ids, 2 * 2.0 + 3)
        return h.observe(allow_duplicates=True)


def _poison_entries() -> list[tuple[str, str]]:
    now = int(time.time() * 1000)

    def payload(jid: str, **extra: object) -> str:
        base = {"id": jid, "job": "chaos.work", "queue": "default", "args": [0],
                "kwargs": {}, "enqueued_at": now, "attempt": 0}
        return json.dumps({**base, **extra}, separators=(",", ":"))

    a, b = new_id(), new_id()
    return [(a, payload(a, then="not-a-list")),
            (b, payload(b, attempt="x")),
            ("short", json.dumps({"id": "short", "job": "chaos.unknown", "queue": "default",
                                  "args": [], "kwargs": {}, "attempt": 0})),
            ("raw-not-json", "this is not JSON {")]


def poison_entries(base: Path, size: Size) -> Observation:
    """Malformed entries pushed raw into the queue, then ordinary jobs behind them."""
    with Harness(base) as h:
        w = h.spawn(concurrency=2)
        entries = _poison_entries()
        for jid, raw in entries:
            h.ledger.record("poison", jid)
            h.r.lpush(keys.queue("default"), raw)
        h.r.sadd(keys.QUEUES, "default")
        ids = h.enqueue_many(app.work, 20, 0.0)
        h.wait_finished(ids, 15)
        try:
            wait_until(lambda: h.r.zcard(keys.DEAD) >= len(entries), 5, "the dead-set writes")
        except AssertionError:
            pass  # reported below
        faults.sigterm_exit(w, EXIT_LIMIT)
        dead = [json.loads(m) if m.startswith(b"{") else {} for m in h.r.zrange(keys.DEAD, 0, -1)]
        malformed = sum(1 for d in dead if d.get("dead_reason") == "malformed")
        return h.observe(dead_writes=int(h.r.get(keys.stat("dead")) or 0),
                         dead_malformed=malformed)


def _sha(name: str, url: str) -> bytes:
    b = RedisBackend(url)
    try:
        b.load_scripts()  # loaded now, so the first EVALSHA is the one dropped
        return script(name).sha.encode()
    finally:
        b.close()


def proxy_enqueue_reply_dropped(base: Path, size: Size) -> Observation:
    """The reply of an at_most_once job's enqueue is lost after Redis ran the script."""
    with Harness(base) as h:
        proxy = Proxy(h.redis.port)
        try:
            # one job at a time, so the two copies of a re-sent enqueue are two reservations
            h.spawn("--batch", "1", "--prefetch", "0", concurrency=1)
            via = RedisBackend(proxy.url)
            proxy.drop_reply_of(_sha("enqueue", h.url))
            ids = [jid for jid in [h.enqueue_one(app.once.call(0.0), backend=via)] if jid]
            ids += h.enqueue_many(app.once, 10, 0.0)
            h.wait_finished(ids, 15)
            via.close()
            return h.observe()
        finally:
            proxy.close()


def proxy_reserve_reply_dropped(base: Path, size: Size) -> Observation:
    """A worker behind the proxy loses the reply of one reserve after Redis ran it."""
    with Harness(base) as h:
        proxy = Proxy(h.redis.port)
        try:
            sha = _sha("reserve", h.url)
            h.spawn(url=proxy.url, concurrency=4)
            wait_until(lambda: h.r.scard(keys.WORKERS) == 1, 20, "the worker to register")
            proxy.drop_reply_of(sha)
            ids = h.enqueue_many(app.work, 10, 0.0)
            wait_until(proxy.dropped.is_set, 10, "a reserve reply to be dropped")
            ids += h.enqueue_many(app.work, 10, 0.0)
            h.wait_finished(ids, 5)
            return h.observe()
        finally:
            proxy.close()
