"""The core's status records (podjobs.status) on a real Redis, without HTTP: every
transition writes the record in the script that makes it; untracked jobs write none."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from podjobs import keys, status
from podjobs.backend import RedisBackend
from podjobs.client import Client, Target
from podjobs.fairshare import ready_count, ready_jobs
from podjobs.gateway import text
from podjobs.jobs import Call, JobDef
from podjobs.payload import encode
from podjobs.pods.topology import PodState
from podjobs.settlement import Kind, Settlement
from podjobs.surface.api.auth import Principal
from podjobs.surface.api.service import ApiError, Service
from tests.apps import api_app
from tests.backends import Probe
from tests.helpers import wait_until, worker

TTL = 120


def record(r: redis.Redis, job_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(keys.status(job_id)).items()}


def enqueue(url: str, jd: JobDef, *args: Any, queue: str | None = None, **kw: Any) -> str:
    return Client(RedisBackend(url)).enqueue_call(Call(jd, args, queue=queue, track=TTL), **kw).id


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


# -- on each backend (the `probe` fixture: redis and sqlite; PODJOBS_TEST_BACKENDS=all adds
# mariadb and postgres): the records read through the backend (StatusStore.status_record)


@pytest.fixture
def sb(probe: Probe) -> Iterator[Any]:
    """The probe's backend (Redis or SQL), for the writes and the reads of a test."""
    b = probe.backend()
    try:
        yield b
    finally:
        b.close()


def rec_of(b: Any, job_id: str) -> dict[str, str]:
    got: dict[str, str] = b.status_record(job_id)
    return got


def ttl_of(b: Any, job_id: str) -> int:
    """Seconds the record is still kept (Redis: its TTL; SQL: expires_ms from now)."""
    if isinstance(b, RedisBackend):
        return int(b.redis.ttl(keys.status(job_id)))
    from sqlalchemy import select

    from podjobs.sqlbackend.tables import status as pj_status

    with b.engine.connect() as c:
        exp = c.execute(select(pj_status.c.expires_ms).where(pj_status.c.job_id == job_id)).scalar()
    return -2 if exp is None else (int(exp) - b.now_ms()) // 1000


def waiting(b: Any, kind: str, queue: str = "default") -> list[str]:
    """The payloads in `queue`'s retry or scheduled set (kind "retry" / "scheduled")."""
    if isinstance(b, RedisBackend):
        zkey = keys.retry(queue) if kind == "retry" else keys.scheduled(queue)
        return [text(m) for m in b.redis.zrange(zkey, 0, -1)]
    want = "retry" if kind == "retry" else "sched"
    return [p for q, k, _, p in b.due_rows() if q == queue and k == want]


def tracked(b: Any, jd: JobDef, *args: Any, queue: str | None = None, **kw: Any) -> str:
    return Client(b).enqueue_call(Call(jd, args, queue=queue, track=TTL), **kw).id


def test_untracked_jobs_write_no_status_record(redis_url: str, r: redis.Redis) -> None:
    c = Client(RedisBackend(redis_url))
    for i in range(20):
        c.enqueue_call(api_app.add.call(i, i))
    c.enqueue_many(api_app.add, [((i, 1), {}) for i in range(20)])
    c.enqueue_call(api_app.fail.call("x"))
    with worker(redis_url):
        wait_until(lambda: ready_count(r, "default") == 0 and r.zcard(keys.DEAD) == 1,
                   what="the jobs to run")
    assert list(r.scan_iter(match=keys.status("*"))) == []
    assert b"track" not in r.zrange(keys.DEAD, 0, -1)[0]


def test_a_tracked_job_goes_queued_running_succeeded(probe: Probe, sb: Any) -> None:
    jid = tracked(sb, api_app.create_thing, "t1")
    rec = rec_of(sb, jid)
    assert rec["state"] == "queued" and rec["job"] == "api.create_thing"
    assert rec["payload"] == probe.ready_payloads()[0]
    assert rec["max_attempts"] == "1" and rec["attempts"] == "0"
    assert status.PENDING_TTL_S - 5 < ttl_of(sb, jid) <= status.PENDING_TTL_S
    with probe.worker() as w:
        wait_until(lambda: rec_of(sb, jid).get("state") == "succeeded", what="success")
    rec = rec_of(sb, jid)
    assert rec["location"] == "/things/t1" and json.loads(rec["result"]) == {"location": "/things/t1"}
    assert rec["attempts"] == "1" and "payload" not in rec and "worker" not in rec
    assert int(rec["enqueued_ms"]) <= int(rec["started_ms"]) <= int(rec["finished_ms"])
    assert 0 < ttl_of(sb, jid) <= TTL
    assert w.id  # the worker that ran it


def test_created_travels_from_a_child_process(redis_url: str, r: redis.Redis) -> None:
    a = enqueue(redis_url, api_app.create_thing, "child")
    b = enqueue(redis_url, api_app.once, "amo")  # at-most-once: acked before it runs
    with worker(redis_url, isolation="process", app_modules=["tests.apps.api_app"],
                concurrency=1):
        wait_until(lambda: record(r, a).get("state") == record(r, b).get("state") == "succeeded",
                   timeout=30, what="both jobs")
    assert record(r, a)["location"] == "/things/child"
    assert record(r, b)["location"] == "/once/amo"


def test_retrying_then_cancelled_from_the_retry_set(probe: Probe, sb: Any) -> None:
    jid = tracked(sb, api_app.retry_later)
    with probe.worker():
        wait_until(lambda: rec_of(sb, jid).get("state") == "retrying", what="retrying")
    rec = rec_of(sb, jid)
    assert rec["attempts"] == "1" and json.loads(rec["error"])["class"] == "RuntimeError"
    assert int(rec["run_at_ms"]) > int(rec["updated_ms"]) + 25_000
    assert [rec["payload"]] == waiting(sb, "retry")
    assert sb.cancel(jid, "default", None, None, TTL) == ("cancelled", "cancelled")
    assert waiting(sb, "retry") == []
    assert sb.cancel(jid, "default", None, None, TTL) == ("already", "cancelled")
    assert sb.cancel(jid, "other", None, None, TTL) == ("already", "cancelled")
    assert sb.cancel("01ARZ3NDEKTSV4RRFFQ69G5FAV", "default", None, None, TTL) == ("unknown", "")
    assert 0 < ttl_of(sb, jid) <= TTL


def test_a_job_put_back_is_queued_again_and_cancellable(probe: Probe, sb: Any) -> None:
    jid = tracked(sb, api_app.put_back)
    with probe.worker():
        wait_until(lambda: rec_of(sb, jid).get("reason") == "throttled", what="put back")
    rec = rec_of(sb, jid)
    assert rec["state"] == "queued" and rec["attempts"] == "1"
    assert [rec["payload"]] == waiting(sb, "scheduled")
    assert sb.cancel(jid, "default", None, None, TTL)[0] == "cancelled"
    assert waiting(sb, "scheduled") == []


def test_failed_then_revived_from_the_dead_set(probe: Probe, sb: Any) -> None:
    jid = tracked(sb, api_app.fail, "nope")
    with probe.worker():
        wait_until(lambda: rec_of(sb, jid).get("state") == "failed", what="failed")
        rec = rec_of(sb, jid)
        assert rec["reason"] == "retries_exhausted" and json.loads(rec["error"])["message"] == "nope"
        assert 0 < ttl_of(sb, jid) <= TTL
        assert probe.inspector().dead_retry(jid)
        # back on its queue, then failed once more
        wait_until(lambda: rec_of(sb, jid).get("state") == "failed"
                   and int(rec_of(sb, jid)["updated_ms"]) > int(rec["updated_ms"]), what="rerun")


def test_the_record_a_running_job_has_and_a_started_job_is_not_cancellable(
        probe: Probe, sb: Any) -> None:
    jid = tracked(sb, api_app.slow, 1.0)
    with probe.worker() as w:
        wait_until(lambda: rec_of(sb, jid).get("state") == "running", what="running")
        rec = rec_of(sb, jid)
        assert rec["worker"] == w.id and "payload" not in rec and rec["attempts"] == "1"
        assert sb.cancel(jid, "default", None, None, TTL) == ("refused", "running")
        wait_until(lambda: rec_of(sb, jid).get("state") == "succeeded", what="done")


def test_a_held_job_is_tracked_and_cancellable(redis_url: str, r: redis.Redis) -> None:
    b = RedisBackend(redis_url)
    r.set(keys.moving("shop-m"), "move-1")  # a move of shop-m to this pod is under way
    call = Call(api_app.add, (1, 2), track=TTL)
    p = call.payload(0, "shop-m", "p1")
    st = status.enqueued(p, 1)
    assert b.hold("shop-m", "default", [(p["id"], encode(p))], status=st) is True
    assert record(r, p["id"])["state"] == "queued" and r.hlen(keys.held("shop-m")) == 1
    assert b.cancel(p["id"], "default", "shop-m", None, TTL)[0] == "cancelled"
    assert r.hlen(keys.held("shop-m")) == 0


def test_a_refused_unique_enqueue_writes_no_record(probe: Probe, sb: Any) -> None:
    c = Client(sb)
    first = c.enqueue_call(Call(api_app.unique, ("k",), track=TTL))
    second = c.enqueue_call(Call(api_app.unique, ("k",), track=TTL))
    assert first.enqueued and not second.enqueued
    assert rec_of(sb, first.id) and not rec_of(sb, second.id)
    ukey = json.loads(probe.ready_payloads()[0])["unique"]
    assert probe.counts()["unique"] == 1
    assert sb.cancel(first.id, "default", None, ukey, TTL)[0] == "cancelled"
    assert probe.counts()["unique"] == 0  # the unique key is free again
    assert c.enqueue_call(Call(api_app.unique, ("k",), track=TTL)).enqueued


def test_a_reserved_job_is_not_cancellable_and_an_expired_record_is_gone(
        probe: Probe, sb: Any) -> None:
    """A worker took the job (reserved, not started yet): cancel refuses and changes nothing.
    A record past its TTL reads as none; on SQL the promote sweep deletes its row."""
    sb.heartbeat("w1", 60_000, True, {"queues": "default"})
    jid = tracked(sb, api_app.add, 1, 2)
    assert sb.reserve("w1", ["default"], 1)
    assert sb.cancel(jid, "default", None, None, TTL) == ("refused", "queued")
    assert rec_of(sb, jid)["state"] == "queued" and probe.in_flight() == 1
    if isinstance(sb, RedisBackend):
        sb.redis.pexpire(keys.status(jid), 1)
        wait_until(lambda: not rec_of(sb, jid), what="the record to expire")
        return
    from sqlalchemy import func, select, update

    from podjobs.sqlbackend.tables import status as pj_status

    with sb.engine.begin() as c:
        c.execute(update(pj_status).where(pj_status.c.job_id == jid).values(expires_ms=1))
    assert rec_of(sb, jid) == {}
    assert sb.cancel(jid, "default", None, None, TTL) == ("unknown", "")
    fresh = probe.backend()  # a backend object sweeps at its first promote
    try:
        fresh.promote(["default"])
        with fresh.engine.connect() as c:
            assert c.execute(select(func.count()).select_from(pj_status)).scalar() == 0
    finally:
        fresh.close()


class OnePodRouter:
    """What the HTTP API's Service needs of a pods Router (and its directory), for pod p1
    alone, where every tenant lives."""

    stale = False

    def __init__(self, url: str) -> None:
        self.url = url
        self.directory = self
        self._backend = RedisBackend(url)

    def pods(self) -> dict[str, Any]:
        return {"p1": SimpleNamespace(redis_url=self.url, state=PodState.ACTIVE)}

    def pod(self, name: str) -> Any:
        return self.pods()[name]

    def tenant(self, name: str) -> Any:
        return SimpleNamespace(pod="p1", move=None, state="active")

    def backend(self, pod: str) -> RedisBackend:
        return self._backend

    def resolve(self, tenant: str | None, pod: str | None) -> Target:
        return Target("p1", self._backend)


def test_another_tenants_record_costs_no_further_read(
        redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    jid = enqueue(redis_url, api_app.slow, 1.0, tenant="shop-x")
    r.hset(keys.status(jid), mapping={"state": "running", "worker": "w-gone"})
    svc = Service(OnePodRouter(redis_url))
    reads: list[Any] = []
    real_exists = redis.Redis.exists

    def exists(self: redis.Redis, *names: Any) -> Any:
        reads.append(names)
        return real_exists(self, *names)

    monkeypatch.setattr(redis.Redis, "exists", exists)
    try:
        with pytest.raises(ApiError) as ei:
            svc.find(Principal("y", tenant="shop-y"), jid)
        assert ei.value.status_code == 404
        assert reads == []  # the heartbeat of another tenant's worker is not read
        view = svc.find(Principal("x", tenant="shop-x"), jid).view(jid)
        assert view["state"] == "queued" and view["reason"] == "recovered"
        assert reads == [(keys.heartbeat("w-gone"),)]
    finally:
        svc.close()


def test_a_late_start_never_overwrites_what_happened_since(probe: Probe, sb: Any) -> None:
    """A start is written only while the job is in the worker's in-flight hash: a start sent
    again after a lost reply, or by a worker reaped meanwhile, changes nothing."""
    b = sb
    b.heartbeat("w1", 60_000, True, {"queues": "default"})
    a = tracked(b, api_app.add, 1, 2)
    (q, raw), = b.reserve("w1", ["default"], 1) or []
    data = json.loads(raw)
    start = (q, a, True, status.started(data, "w1", 1))
    assert b.ack("w1", {}, [start]) == 0
    assert rec_of(b, a)["state"] == "running" and "payload" not in rec_of(b, a)
    # it failed: retrying, with the payload of its next attempt; then the start arrives again
    nxt = encode({**data, "attempt": 1})
    again = Settlement(Kind.RETRY, a, delay_ms=30_000, payload=nxt)
    again.status = status.retrying(data, 1, {"class": "E"})
    assert b.settle("w1", q, again)
    b.ack("w1", {}, [start])
    rec = rec_of(b, a)
    assert rec["state"] == "retrying" and rec["payload"] == nxt
    assert b.cancel(a, q, None, None, TTL)[0] == "cancelled"  # it is still cancellable
    # a worker reaped before its buffered start was written: the job is back on its queue
    c = tracked(b, api_app.add, 3, 4)
    (q, raw), = b.reserve("w1", ["default"], 1) or []
    if isinstance(b, RedisBackend):
        b.redis.delete(keys.heartbeat("w1"))
    assert b.recover("w1", ["default"], force=probe.sql) == 1
    b.ack("w1", {}, [(q, c, True, status.started(json.loads(raw), "w1", 1))])
    assert rec_of(b, c)["state"] == "queued" and rec_of(b, c)["payload"] == raw.decode()
    assert b.cancel(c, q, None, None, TTL)[0] == "cancelled"
    # at-most-once (acked before it ran): written while the record is queued or retrying only
    b.heartbeat("w1", 60_000, True, {"queues": "default"})
    d = tracked(b, api_app.once, "x")
    (q, raw), = b.reserve("w1", ["default"], 1) or []
    assert b.ack("w1", {q: [d]}) == 1
    once = (q, d, False, status.started(json.loads(raw), "w1", 1))
    b.ack("w1", {}, [once])
    assert rec_of(b, d)["state"] == "running"
    b.ack("w1", {}, [], {q: [(d, False, status.succeeded(json.loads(raw), None))]})
    b.ack("w1", {}, [once])
    assert rec_of(b, d)["state"] == "succeeded"


def test_a_paused_iteration_job_is_queued_not_succeeded_and_cancellable_once_resumed(
        redis_url: str, r: redis.Redis) -> None:
    from podjobs.iteration.admin import Iterations
    from podjobs.surface.api.views import job_view

    b = RedisBackend(redis_url)
    jid = Client(b).enqueue_call(Call(api_app.Steps.definition, (), {"n": 400, "sleep": 0.02},
                                      track=TTL)).id
    adm = Iterations(b)

    def done(job_id: str) -> int:
        p = adm.get(job_id)
        return p.done if p is not None else 0

    with worker(redis_url) as w:
        wait_until(lambda: record(r, jid).get("state") == "running" and done(jid) > 0,
                   what="the job to run")
        adm.pause(jid)
        wait_until(lambda: record(r, jid).get("reason") == "paused", what="the job parked")
        rec = record(r, jid)
        assert rec["state"] == "queued" and not rec.get("finished_ms")
        assert "worker" not in rec and r.ttl(keys.status(jid)) > TTL  # kept like a pending job
        assert job_view(jid, rec, adm.get(jid).as_dict())["state"] == "paused"  # type: ignore[union-attr]
        assert w.id
    # resumed while no worker runs: queued on its queue again, and cancellable
    assert adm.resume(jid) == {jid: "enqueued"}
    rec = record(r, jid)
    assert rec["state"] == "queued" and rec["reason"] == "resumed" and not rec.get("finished_ms")
    assert rec["payload"].encode() == ready_jobs(r, "default")[0]
    assert '"cursor":' in rec["payload"]
    assert b.cancel(jid, "default", None, None, TTL)[0] == "cancelled"
    assert ready_count(r, "default") == 0
    # a resumed job runs on to succeeded
    jid = Client(b).enqueue_call(Call(api_app.Steps.definition, (), {"n": 30, "sleep": 0.01},
                                      track=TTL)).id
    with worker(redis_url):
        wait_until(lambda: done(jid) > 0, what="the second job to run")
        adm.pause(jid)
        wait_until(lambda: record(r, jid).get("reason") == "paused", what="the second job parked")
        adm.resume(jid)
        wait_until(lambda: record(r, jid).get("state") == "succeeded", what="the resumed job")
    assert done(jid) == 30


def test_a_paused_job_in_a_child_process_fires_no_follow_up(redis_url: str, r: redis.Redis) -> None:
    from podjobs.iteration.admin import Iterations

    b = RedisBackend(redis_url)
    call = Call(api_app.Steps.definition, (), {"n": 300, "sleep": 0.02}, track=TTL)
    call.then(Call(api_app.add, (1, 1), queue="parked"))
    jid = Client(b).enqueue_call(call).id
    adm = Iterations(b)
    with worker(redis_url, isolation="process", app_modules=["tests.apps.api_app"], concurrency=1):
        wait_until(lambda: (p := adm.get(jid)) is not None and p.done > 0, timeout=30,
                   what="the job to run")
        adm.pause(jid)
        wait_until(lambda: record(r, jid).get("reason") == "paused", what="the job parked")
        assert record(r, jid)["state"] == "queued"
        assert ready_count(r, "parked") == 0  # paused is not done: no follow-up
        adm.resume(jid)
        wait_until(lambda: record(r, jid).get("state") == "succeeded", timeout=30,
                   what="the resumed job")
        wait_until(lambda: ready_count(r, "parked") == 1, what="its follow-up, once")


def test_a_dead_workers_tracked_job_is_queued_again_and_cancellable(probe: Probe, sb: Any) -> None:
    b = sb
    b.heartbeat("w9", 60_000, True, {"queues": "default,low"})
    jid = tracked(b, api_app.add, 1, 2)
    plain = Client(b).enqueue_call(Call(api_app.add, (5, 6), queue="low")).id
    got = b.reserve("w9", ["default", "low"], 10) or []
    assert len(got) == 2
    q, raw = got[0]
    b.ack("w9", {}, [(q, jid, True, status.started(json.loads(raw), "w9", 1))])
    assert rec_of(b, jid)["state"] == "running"
    if isinstance(b, RedisBackend):
        b.redis.delete(keys.heartbeat("w9"))  # w9 died
    assert b.recover("w9", ["default", "low"], force=probe.sql) == 2
    rec = rec_of(b, jid)
    assert rec["state"] == "queued" and rec["reason"] == "recovered" and "worker" not in rec
    assert rec["payload"].encode() == probe.ready_payloads()[0].encode() == raw
    assert status.PENDING_TTL_S - 5 < ttl_of(b, jid)
    assert not rec_of(b, plain)  # untracked: still no record
    assert b.cancel(jid, q, None, None, TTL)[0] == "cancelled"


def test_a_forwarded_job_is_tracked_on_its_tenants_pod(cluster: Any, zk: Any, pods: Any) -> None:
    """A tracked job found on the wrong pod is forwarded with its record: queued on the
    tenant's pod (where DELETE cancels it), reason moved on the pod it left."""
    from podjobs.pods.podworker import PodWorker
    from podjobs.pods.router import connect
    from podjobs.pods.topology import TopologyStore, register_topology
    from tests.helpers import fast_config

    register_topology(zk, pods)
    TopologyStore(zk).assign("shop-w", "p2")
    r1, r2 = (redis.Redis.from_url(pods.pod(p).redis_url) for p in ("p1", "p2"))
    b1 = RedisBackend(pods.pod("p1").redis_url)
    # enqueued on p1 (say, before the tenant moved): a p1 worker finds it belongs to p2
    h = Client(b1).enqueue_call(Call(api_app.add, (1, 2), queue="fwd", track=TTL), tenant="shop-w",
                                pod="p1")
    w = PodWorker(zk, "p1", fast_config(queues=["fwd"]))
    w.start()
    try:
        wait_until(lambda: record(r1, h.id).get("reason") == "moved", what="the forward")
    finally:
        w.stop()
    left = record(r1, h.id)
    assert left["pod"] == "p2" and "payload" not in left and left["tenant"] == "shop-w"
    assert 0 < r1.ttl(keys.status(h.id)) <= TTL
    there = record(r2, h.id)
    assert there["state"] == "queued" and there["reason"] == "forwarded" and there["pod"] == "p2"
    assert there["payload"].encode() == ready_jobs(r2, "fwd")[0]
    assert there["tenant"] == "shop-w" and there["max_attempts"] == "1" and there["job"] == "api.add"
    c = connect(zk.hosts, zk.root)
    svc = Service(c.router)
    try:
        found = svc.find(Principal("w", tenant="shop-w"), h.id)
        assert found.pod == "p2" and found.record["reason"] == "forwarded"
        ok, view = svc.cancel(Principal("w", tenant="shop-w"), h.id)
        assert ok and view["state"] == "cancelled" and ready_count(r2, "fwd") == 0
    finally:
        svc.close()
        c.close()
