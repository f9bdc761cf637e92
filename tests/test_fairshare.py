"""Fair share inside a pod on a real Redis: tenants of one queue are taken in turn, strict
priority across queues stays, and every path that reads or moves ready jobs knows the
tenants' lists (reserve, cancel, pause, depth, find, recover after kill -9, retry,
scheduled, dead retry, SIGTERM give-back, moves: tests/test_moves.py)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import podjobs
from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.fairshare import ready_count, ready_lists
from podjobs.ids import new_id
from podjobs.ops import Inspector
from tests.apps import core_app
from tests.helpers import spawn_worker, stop_proc, wait_until, worker

ran: list[Any] = []
WORKER = "w-fair"


def payload(tenant: str | None, tag: str, queue: str = "default") -> str:
    d: dict[str, Any] = {"id": new_id(), "job": "f.tag", "queue": queue, "args": [tag],
                         "enqueued_at": 0}
    if tenant is not None:
        d["tenant"] = tenant
    return json.dumps(d, separators=(",", ":"))


@pytest.fixture
def r(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    podjobs.configure(redis_url)
    monkeypatch.setenv("PODJOBS_RECORD_URL", redis_url)
    core_app._r = None
    ran.clear()
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def backend(redis_url: str) -> Iterator[RedisBackend]:
    b = RedisBackend(redis_url, fair_share=True)
    b.redis.sadd(keys.WORKERS, WORKER)
    yield b
    b.close()


def take(b: RedisBackend, queues: list[str], n: int = 1) -> list[tuple[str, str]]:
    """(queue, tag) of the jobs one reservation got."""
    got = b.reserve(WORKER, queues, n) or []
    return [(q, json.loads(p)["args"][0]) for q, p in got]


@podjobs.job(name="f.tag")
def tag(t: str) -> None:
    ran.append(t)


@podjobs.job(name="f.hitag", queue="hi")
def hitag(t: str) -> None:
    ran.append(t)


@podjobs.job(name="f.flaky", retries=2, backoff=podjobs.constant(0.05))
def flaky(t: str) -> None:
    ran.append(t)
    if ran.count(t) == 1:
        raise ValueError("first attempt fails")


@podjobs.job(name="f.doomed", retries=0)
def doomed(t: str) -> None:
    ran.append(t)
    if ran.count(t) == 1:
        raise ValueError("dies the first time")


# -- the order jobs are taken in ---------------------------------------------------------------


def test_a_flooding_tenant_delays_another_by_one_job(backend: RedisBackend) -> None:
    backend.enqueue("default", [payload("big", f"b{i}") for i in range(500)], tenant="big")
    backend.enqueue("default", [payload("small", "s0")], tenant="small")
    backend.enqueue("default", [payload(None, "plain0")])
    got = [take(backend, ["default"])[0][1] for _ in range(3)]
    assert sorted(got) == ["b0", "plain0", "s0"]  # each list once in turn, FIFO inside each
    backend.enqueue("default", [payload("small", "s1"), payload("small", "s2")], tenant="small")
    got = [t for _, t in take(backend, ["default"], 4)]
    assert got.count("s1") == 1 and got.count("s2") == 1 and got[0] != got[1]
    assert ready_count(backend.redis, "default") == 500 - 1 - 2


def test_without_fair_share_the_flood_goes_first(redis_url: str) -> None:
    """The same enqueues with fair share off: the small tenant waits behind the flood (what
    the test above would see without fairness)."""
    b = RedisBackend(redis_url, fair_share=False)
    b.redis.sadd(keys.WORKERS, WORKER)
    b.enqueue("default", [payload("big", f"b{i}") for i in range(50)], tenant="big")
    b.enqueue("default", [payload("small", "s0")], tenant="small")
    got = [t for _, t in take(b, ["default"], 50)]
    assert got == [f"b{i}" for i in range(50)]
    assert take(b, ["default"]) == [("default", "s0")]
    b.close()


def test_round_robin_within_a_batch_and_strict_priority_across_queues(backend: RedisBackend) -> None:
    for t in ("a", "b", "c"):
        backend.enqueue("low", [payload(t, f"{t}{i}", "low") for i in range(3)], tenant=t)
    backend.enqueue("critical", [payload("a", f"crit{i}", "critical") for i in range(2)], tenant="a")
    got = take(backend, ["critical", "low"], 5)
    assert got[:2] == [("critical", "crit0"), ("critical", "crit1")]
    assert sorted(t for _, t in got[2:]) == ["a0", "b0", "c0"]  # one per tenant, then again
    got = take(backend, ["critical", "low"], 6)
    assert sorted(t for _, t in got) == ["a1", "a2", "b1", "b2", "c1", "c2"]
    assert {t[0] for _, t in got[:3]} == {"a", "b", "c"}
    assert take(backend, ["critical", "low"]) == []
    assert backend.redis.llen(keys.ring("low")) == 0  # lists found empty leave the ring


def test_emptied_ring_members_neither_hide_a_waiting_job_nor_let_a_lower_queue_first(
        r: redis.Redis, backend: RedisBackend) -> None:
    """A reserve that took a list's last job used to put it back in the ring, and a reserve
    looked at no more than want + 2 members: behind such empty members a new job was not
    found, a lower queue was served first, and no wake token was left for it (review of
    the fair-share merge)."""
    tenants = [f"t{i}" for i in range(30)]
    for t in tenants:
        backend.enqueue("hi", [payload(t, f"{t}-0", "hi")], tenant=t)
    assert len(take(backend, ["hi"], 29)) == 29 and len(take(backend, ["hi"], 1)) == 1
    assert backend.redis.llen(keys.ring("hi")) == 0  # a list whose last job went left the ring
    backend.enqueue("lo", [payload("x", "low", "lo")], tenant="x")
    backend.enqueue("hi", [payload("t7", "again", "hi")], tenant="t7")
    assert take(backend, ["hi", "lo"]) == [("hi", "again")]
    # members emptied by a cancel stay in the ring until a reserve meets them: it goes on
    # past them to the job behind
    handles = [hitag.call(f"{t}-c").tracked().enqueue(tenant=t) for t in tenants[:10]]
    backend.enqueue("hi", [payload("last", "behind", "hi")], tenant="last")
    assert all(h.cancel() for h in handles)
    assert backend.redis.llen(keys.ring("hi")) == 11  # ten emptied members, then "last"
    assert take(backend, ["hi", "lo"]) == [("hi", "behind")]
    assert take(backend, ["hi", "lo"]) == [("lo", "low")]
    assert backend.redis.llen(keys.ring("hi")) == 0


def test_jobs_on_the_queues_own_list_share_the_ring(backend: RedisBackend) -> None:
    """Retried/recovered jobs come back on the queue's own list (no tenant there): it is one
    more member of the ring, so it neither starves nor is starved."""
    backend.enqueue("default", [payload("big", f"b{i}") for i in range(100)], tenant="big")
    backend.redis.lpush(keys.queue("default"), *(payload("big", f"back{i}") for i in range(100)))
    got = [t for _, t in take(backend, ["default"], 10)]
    assert sum(t.startswith("back") for t in got) == 5


def test_tenant_names_cannot_collide_across_queues() -> None:
    assert keys.tenant_queue("a:b", "c") != keys.tenant_queue("a", "b:c")


# -- the other paths that read ready jobs ------------------------------------------------------


def test_depth_find_and_cancel_see_the_tenants_lists(r: redis.Redis, redis_url: str) -> None:
    ins = Inspector(RedisBackend(redis_url))
    tag.enqueue_many([(f"b{i}",) for i in range(5)], tenant="big")
    h = tag.call("mine").tracked().enqueue(tenant="small")
    assert r.llen(keys.tenant_queue("default", "small")) == 1
    stats = {q.name: q for q in ins.queues()}
    assert stats["default"].size == 6
    assert ins.find_job(h.id).where == "queue"
    assert h.cancel()
    assert r.llen(keys.tenant_queue("default", "small")) == 0
    assert ready_count(r, "default") == 5
    with worker(redis_url):
        wait_until(lambda: len(ran) == 5, what="the other jobs")
    assert "mine" not in ran
    assert ready_count(r, "default") == 0


def test_a_paused_queue_keeps_its_tenants_jobs_until_resumed(r: redis.Redis, redis_url: str) -> None:
    ins = Inspector(RedisBackend(redis_url))
    ins.pause("default")
    tag.enqueue("t1", tenant="small")
    with worker(redis_url):
        ran_before = list(ran)
        assert ready_count(r, "default") == 1
        ins.resume("default")
        wait_until(lambda: ran == ["t1"], what="the job after resume")
    assert ran_before == []


def test_retried_scheduled_and_dead_retried_jobs_of_a_tenant_run(r: redis.Redis, redis_url: str) -> None:
    ins = Inspector(RedisBackend(redis_url))
    with worker(redis_url):
        flaky.enqueue("retried", tenant="t")
        tag.enqueue_in(0.2, "scheduled", tenant="t")
        doomed.enqueue("dead", tenant="t")
        wait_until(lambda: ran.count("retried") == 2 and "scheduled" in ran and "dead" in ran,
                   what="the retry, the scheduled job, the death")
        wait_until(lambda: ins.dead(), what="the dead job")
        (data, _), = ins.dead()
        assert ins.dead_retry(str(data["id"]))
        wait_until(lambda: ran.count("dead") == 2, what="the dead job retried")
    assert ready_count(r, "default") == 0


def test_a_tenants_jobs_survive_kill9_and_sigterm(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    n = 40
    core_app.record.enqueue_many([(f"j{i}", 0.05) for i in range(n)], tenant="t1")
    core_app.record.enqueue_many([(f"k{i}", 0.05) for i in range(n)], tenant="t2")
    assert set(ready_lists(r, "default")) == {keys.queue("default"),
                                             keys.tenant_queue("default", "t1"),
                                             keys.tenant_queue("default", "t2")}

    def done() -> set[Any]:
        return set(r.hkeys("rec:count"))

    w1 = spawn_worker(redis_url, concurrency=4, log=tmp_path / "w1.log")
    wait_until(lambda: len(done()) >= 8, what="some jobs done")
    w1.send_signal(signal.SIGKILL)
    w1.wait()
    w2 = spawn_worker(redis_url, concurrency=4, log=tmp_path / "w2.log")
    wait_until(lambda: len(done()) >= 30, timeout=20, what="more jobs after the kill")
    assert stop_proc(w2) == 0  # SIGTERM: unstarted jobs go back
    w3 = spawn_worker(redis_url, concurrency=4, log=tmp_path / "w3.log")
    try:
        wait_until(lambda: len(done()) == 2 * n, timeout=30, what="every job of both tenants")
    finally:
        stop_proc(w3)
    assert Inspector(RedisBackend(redis_url)).stats()["recovered"] >= 1
    assert ready_count(r, "default") == 0
