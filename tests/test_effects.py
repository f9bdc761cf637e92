"""Exactly-once effects (ctx.once, podjobs.effects) on the session's MariaDB shards, with
real workers: duplicates and retries do the effect once; a worker SIGKILLed after its commit
and before its ack has its job run again elsewhere, and the charge is still made once."""

from __future__ import annotations

import queue
import signal
import time
from typing import Any

import pytest
from sqlalchemy import text

import podjobs
from podjobs import effects
from podjobs.backend import RedisBackend
from podjobs.db import engine
from tests.helpers import REPO, stop_proc, worker

DONE: queue.Queue[tuple[str, int]] = queue.Queue()


@podjobs.job(name="fxt.charge", queue="fxt", retries=3, backoff=podjobs.constant(0))
def charge(ctx: podjobs.Context, order_id: int, fail_first: bool = False) -> None:
    if ctx.once(f"charge:{order_id}"):
        ctx.db.execute(text("INSERT INTO charges (order_id, job_id) VALUES (:o, :j)"),
                       {"o": order_id, "j": ctx.job_id})
    if fail_first and ctx.attempt == 0:
        raise RuntimeError("after the charge: rolled back with it")
    DONE.put((ctx.job_id, ctx.attempt))


@podjobs.job(name="fxt.refund", queue="fxt", idempotent=lambda order_id: f"refund:{order_id}")
def refund(ctx: podjobs.Context, order_id: int) -> None:
    ctx.db.execute(text("INSERT INTO charges (order_id, job_id) VALUES (:o, :j)"),
                   {"o": -order_id, "j": ctx.job_id})


class Rebate(podjobs.Job):
    """The class form of `idempotent=`: one rebate per order, whatever the jobs."""

    job_name = "fxt.rebate"
    queue = "fxt"
    idempotent = staticmethod(lambda order_id: f"rebate:{order_id}")

    def perform(self, ctx: podjobs.Context, order_id: int) -> None:
        ctx.db.execute(text("INSERT INTO charges (order_id, job_id) VALUES (:o, :j)"),
                       {"o": 1000 + order_id, "j": ctx.job_id})


def _charges(url: str) -> list[tuple[int, str]]:
    with engine(url).connect() as conn:
        return [(int(r[0]), str(r[1])) for r in conn.execute(
            text("SELECT order_id, job_id FROM charges ORDER BY order_id, id"))]


def _ledger(url: str) -> list[tuple[str, str]]:
    with engine(url).connect() as conn:
        return [(str(r[0]), str(r[1])) for r in conn.execute(
            text(f"SELECT okey, job_id FROM {effects.TABLE} ORDER BY okey"))]


@pytest.fixture
def shard(pods: Any) -> Any:
    pod = pods.pods[0]
    with engine(pod.shard_url).begin() as conn:
        conn.execute(text("CREATE TABLE charges (id INT AUTO_INCREMENT PRIMARY KEY, "
                          "order_id INT NOT NULL, job_id CHAR(26) NOT NULL)"))
    while not DONE.empty():
        DONE.get_nowait()
    return pod


def test_duplicates_and_a_rolled_back_retry_charge_once(shard: Any) -> None:
    podjobs.configure(shard.redis_url)
    dup = [charge.enqueue(1) for _ in range(4)]             # four jobs, one order
    retried = charge.enqueue(2, fail_first=True)            # charges, fails, rolls back
    with worker(shard.redis_url, queues=["fxt"], shard_url=shard.shard_url):
        done = [DONE.get(timeout=60) for _ in range(5)]
    assert {jid for jid, _ in done} == {h.id for h in [*dup, retried]}
    assert (retried.id, 1) in done                          # succeeded on its retry
    charges = _charges(shard.shard_url)
    assert [o for o, _ in charges] == [1, 2]
    assert dict(charges)[2] == retried.id                   # the retry's charge, not the first's
    ledger = dict(_ledger(shard.shard_url))
    assert ledger == {"charge:1": dict(charges)[1], "charge:2": retried.id}


def test_killed_after_commit_before_ack_charges_once(shard: Any, pods: Any, zk: Any,
                                                       zk_root: str, tmp_path: Any) -> None:
    """Each worker process dies (SIGKILL) right after its job's commit, before the ack; the
    job is redelivered to the next worker, which finds the key: one charge per order."""
    import os
    import subprocess
    import sys

    from podjobs.pods.topology import register_topology

    register_topology(zk, pods)
    podjobs.configure(shard.redis_url)
    orders = 3
    backend = RedisBackend(shard.redis_url)
    from tests.apps import effects_app

    jobs = [effects_app.charge.enqueue(o) for o in range(orders)]
    spec = f"{pods.zookeeper}{zk_root}"

    def spawn(kill: bool) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PODJOBS_RECORD_URL=shard.redis_url, PYTHONPATH=str(REPO))
        if kill:
            env["PODJOBS_FX_KILL_AFTER_COMMIT"] = "1"
        return subprocess.Popen(
            [sys.executable, "-m", "podjobs.cli", "worker", "--app", "tests.apps.effects_app",
             "--pod", shard.name, "--zk", spec, "--queues", "fx", "--concurrency", "1",
             "--heartbeat-ttl", "1", "--poll-interval", "0.05"],
            cwd=REPO, env=env, stdout=open(tmp_path / "w.log", "ab"), stderr=subprocess.STDOUT)

    kills = 0
    for _ in range(orders):                        # one killed worker per job, at most
        p = spawn(kill=True)
        rc = p.wait(timeout=120)
        assert rc == -signal.SIGKILL, (tmp_path / "w.log").read_text()[-3000:]
        kills += 1
        if len(_charges(shard.shard_url)) == orders:
            break
    assert kills >= 1
    p = spawn(kill=False)                           # picks up every job left in flight
    try:
        done = [backend.redis.blpop(["fx:done"], timeout=90) for _ in jobs]
    finally:
        stop_proc(p, signal.SIGTERM)
    assert all(done), (tmp_path / "w.log").read_text()[-3000:]
    assert sorted(d[1].decode() for d in done if d) == sorted(j.id for j in jobs)
    charges = _charges(shard.shard_url)
    assert sorted(o for o, _ in charges) == list(range(orders)), charges


def test_an_idempotent_job_runs_once_per_key(shard: Any) -> None:
    podjobs.configure(shard.redis_url)
    refunds = [refund.enqueue(7) for _ in range(3)] + [refund.enqueue(8)]
    marker = charge.enqueue(99)                  # done last (one queue, one thread)
    with worker(shard.redis_url, queues=["fxt"], shard_url=shard.shard_url, concurrency=1):
        assert DONE.get(timeout=60)[0] == marker.id
    charges = _charges(shard.shard_url)
    assert sorted(o for o, _ in charges) == [-8, -7, 99]
    assert dict(_ledger(shard.shard_url))["fxt.refund:refund:7"] in {h.id for h in refunds}


def test_a_class_job_with_idempotent_runs_once_per_key(shard: Any) -> None:
    podjobs.configure(shard.redis_url)
    rebates = [Rebate.enqueue(5) for _ in range(3)] + [Rebate.enqueue(6)]
    marker = charge.enqueue(98)                  # done last (one queue, one thread)
    with worker(shard.redis_url, queues=["fxt"], shard_url=shard.shard_url, concurrency=1):
        assert DONE.get(timeout=60)[0] == marker.id
    assert sorted(o for o, _ in _charges(shard.shard_url)) == [98, 1005, 1006]
    assert dict(_ledger(shard.shard_url))["fxt.rebate:rebate:5"] in {h.id for h in rebates}


def test_prune_deletes_only_expired_keys(shard: Any) -> None:
    url = shard.shard_url
    effects.ensure_table(url, cached=False)
    now = int(time.time() * 1000)
    with engine(url).begin() as conn:
        for i, exp in enumerate([now - 10, now - 1, now + 60_000]):
            conn.execute(text(f"INSERT INTO {effects.TABLE} (okey, job_id, created_ms, expires_ms) "
                                 "VALUES (:k, :j, :c, :e)"),
                         {"k": f"k{i}", "j": "0" * 26, "c": now, "e": exp})
    assert effects.prune(url, now_ms=now, batch=1) == 2
    assert [k for k, _ in _ledger(url)] == ["k2"]


def test_a_bad_key_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="ctx.once key ''.*non-empty string"):
        effects._check_key("")
