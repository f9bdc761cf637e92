"""Delivery under real faults (issue 11): a zombie worker, Redis down past the heartbeat TTL,
poisoned entries, replies lost after Redis ran a script. Real worker processes, real signals,
a real redis-server the test starts and stops."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import podjobs
from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.fairshare import ready_count
from podjobs.ids import new_id
from podjobs.infra.ports import free_port
from podjobs.infra.servers import RedisServer
from podjobs.payload import encode
from tests.apps import core_app
from tests.helpers import spawn_worker, stop_proc, wait_until


@pytest.fixture
def r(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    podjobs.configure(redis_url)
    monkeypatch.setenv("PODJOBS_RECORD_URL", redis_url)
    core_app._r = None
    return redis.Redis.from_url(redis_url)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _starts_by(r: redis.Redis, pid: int) -> list[str]:
    return [s.decode().split()[0] for s in r.lrange("rec:starts", 0, -1) if s.decode().endswith(f" {pid}")]


def _counts(r: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall("rec:count").items()}


def _inflight(r: redis.Redis) -> int:
    return sum(int(r.hlen(k)) for k in r.scan_iter(match=keys.inflight("*", "*")))


def test_zombie_worker_never_starts_a_job_reserved_before_its_reap(
    r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """SIGSTOP past the heartbeat TTL with a full local buffer, jobs taken over, SIGCONT:
    the zombie starts none of the buffered jobs and goes on under a new generation."""
    n = 120
    core_app.ledger.enqueue_many([(f"j{i}", 0.3) for i in range(n)])
    w1 = spawn_worker(redis_url, "--prefetch", "60", concurrency=8, log=tmp_path / "w1.log")
    w2 = None
    try:
        wait_until(lambda: len(_starts_by(r, w1.pid)) >= 8, what="w1 to run 8 jobs at once")
        w1.send_signal(signal.SIGSTOP)
        wait_until(lambda: _state(w1.pid) == "T", what="w1 to stop")
        before = _starts_by(r, w1.pid)
        w2 = spawn_worker(redis_url, concurrency=8, log=tmp_path / "w2.log")
        wait_until(lambda: len(_counts(r)) + len(before) >= n, timeout=30,
                   what="w2 to run every job w1 had not started")
        w1.send_signal(signal.SIGCONT)
        # w2 reaped w1 meanwhile; w1 noticed once it is registered again (under any id)
        wait_until(lambda: any(f":{w1.pid}:" in m.decode() for m in r.smembers(keys.WORKERS)),
                   timeout=10, what="w1 to notice it was reaped and register again")
        assert stop_proc(w1) == 0
        after = _starts_by(r, w1.pid)
        assert after == before, f"the zombie started {sorted(set(after) - set(before))}"
        wait_until(lambda: len(_counts(r)) == n, timeout=20, what="every job to finish")
        # only jobs that were running when w1 stopped may have run twice (cut off mid-job)
        twice = {t for t, c in _counts(r).items() if c > 1}
        assert twice <= set(before)
    finally:
        if w1.poll() is None:
            w1.send_signal(signal.SIGCONT)
            stop_proc(w1)
        if w2 is not None:
            stop_proc(w2)
    assert _inflight(r) == 0 and ready_count(r, "default") == 0


class AofRedis(RedisServer):
    """A redis-server that keeps every write in its append-only file (fsync always)."""

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--appendonly") + 1] = "yes"
        return [*cmd, "--appendfsync", "always"]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, with an append-only file, to kill and restart."""
    srv = AofRedis.in_dir(tmp_path / "redis", free_port())
    assert isinstance(srv, RedisServer)
    srv.start()
    srv.wait_ready()
    try:
        yield srv
    finally:
        srv.stop()


def test_redis_down_past_twice_the_ttl_strands_nothing(
    own_redis: RedisServer, r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """One worker, 2 s jobs, its Redis killed (kill -9) and down for longer than twice the
    heartbeat TTL, then restarted from its append-only file: afterwards every job runs and
    nothing stays in flight (an error talking to Redis is not a reap)."""
    url = f"redis://127.0.0.1:{own_redis.port}/0"  # the queues; the ledger stays on `r`
    podjobs.configure(url)
    q = redis.Redis.from_url(url)
    n = 12
    core_app.ledger.enqueue_many([(f"j{i}", 2.0) for i in range(n)])
    w = spawn_worker(url, concurrency=4, log=tmp_path / "w.log", record_url=redis_url)
    try:
        wait_until(lambda: r.llen("rec:starts") >= 4, what="4 jobs to start")
        pid = own_redis.pid
        assert pid is not None
        own_redis._signal(pid, signal.SIGKILL)
        own_redis._wait_gone(pid, 10)
        time.sleep(6)  # the fault itself: Redis down for six times the 1 s TTL
        own_redis.start()
        own_redis.wait_ready()
        wait_until(lambda: len(_counts(r)) == n, timeout=40, what="every job to run")
        wait_until(lambda: _inflight(q) == 0, timeout=10, what="nothing left in flight")
    finally:
        stop_proc(w)
    assert ready_count(q, "default") == 0 and _inflight(q) == 0


def _raw(job: str, **extra: object) -> str:
    return encode({"id": new_id(), "job": job, "args": [], "kwargs": {}, **extra})


def test_each_poisoned_entry_costs_one_dead_write_and_runs_nothing(
    r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    good = _raw("t.ledger", args=["ok"])
    spaced = json.dumps({"id": new_id(), "job": "t.ledger", "args": ["spaced"], "kwargs": {}})
    poison = [
        _raw("t.ledger", args=["then"], then={"id": "x"}),              # malformed then
        _raw("t.ledger", args=["then2"], then=[{"id": new_id(), "job": "t.ledger"}]),  # no queue
        _raw("t.ledger", args=["attempt"], attempt="3"),                # attempt not an int
        spaced,                                                          # a known job, spaces
        json.dumps({"id": "short", "job": "no.such.job", "args": [], "kwargs": {}}),
        "garbage",
        '{"id":"' + "Z" * 26 + '","job":"t.ledger","args":{}}',          # args not a list
    ]
    r.lpush(keys.queue("default"), *poison, good)
    r.sadd(keys.QUEUES, "default")
    w = spawn_worker(redis_url, concurrency=2, log=tmp_path / "w.log")
    try:
        wait_until(lambda: r.zcard(keys.DEAD) == len(poison) and _counts(r).get("ok") == 1,
                   timeout=15, what="every poisoned entry dead and the good job run")
        wait_until(lambda: _inflight(r) == 0, what="nothing in flight")
    finally:
        assert stop_proc(w) == 0
    assert int(r.get(keys.stat("dead")) or 0) == len(poison)  # one dead-set write each
    assert _counts(r) == {"ok": 1}
    dead = [json.loads(m) for m in r.zrange(keys.DEAD, 0, -1)]
    assert sorted(d["dead_reason"] for d in dead) == ["malformed"] * len(poison)
    assert sorted(d["raw"] for d in dead) == sorted(poison)  # the raw text kept
    # a restart finds nothing to run again
    w = spawn_worker(redis_url, concurrency=2, log=tmp_path / "w2.log")
    try:
        core_app.ledger.enqueue("after")
        wait_until(lambda: _counts(r).get("after") == 1, what="a job after the restart")
    finally:
        stop_proc(w)
    assert set(_counts(r)) == {"ok", "after"} and r.zcard(keys.DEAD) == len(poison)


def test_a_resent_enqueue_is_a_duplicate_and_a_resent_reserve_replays(
    r: redis.Redis, redis_url: str
) -> None:
    """The same script call sent twice (what a lost reply and a re-send amount to)."""
    b = RedisBackend(redis_url)
    p = _raw("t.ledger", args=["once"])
    assert b.enqueue("default", [p]) == 1
    assert b.enqueue("default", [p]) == 1  # the first call's answer, nothing written
    assert ready_count(r, "default") == 1
    b.enqueue("default", [_raw("t.ledger", args=[str(i)]) for i in range(5)])
    b.heartbeat("w1", 5000, True, {"queues": "default"})
    first = b.reserve("w1", ["default"], 3, "req-1")
    again = b.reserve("w1", ["default"], 3, "req-1")
    assert first is not None and len(first) == 3 and again == first
    assert ready_count(r, "default") == 3 and r.hlen(keys.inflight("w1", "default")) == 3
    rest = b.reserve("w1", ["default"], 10, "req-2")
    assert rest is not None and len(rest) == 3 and not {p for _, p in rest} & {p for _, p in first}
    # the reservation record goes with the worker
    assert b.recover("w1", ["default"], force=True) == 6
    assert not r.exists(keys.reservation("w1"))


def test_a_resent_bulk_enqueue_in_chunks_is_a_duplicate_too(
    r: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk enqueue over the chunk size goes as one MULTI of scripts, each chunk with its
    own request marker: sent again, nothing is written twice."""
    import podjobs.backend as backend_mod

    monkeypatch.setattr(backend_mod, "ENQUEUE_CHUNK", 3)
    b = RedisBackend(redis_url)
    payloads = [_raw("t.ledger", args=[str(i)]) for i in range(10)]
    assert b.enqueue("default", payloads) == 10
    assert b.enqueue("default", payloads) == 10  # the first call's answers
    assert ready_count(r, "default") == 10
