"""The queue and worker on each backend of `selected_kinds()` (the `probe` fixture: pod p1's
own redis-server flushed per test, and SQLite; PODJOBS_TEST_BACKENDS=all adds MariaDB and
PostgreSQL); the Redis-only ones (its errors, its scripts, its payload bytes) on Redis."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

import podjobs
from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.errors import BackendUnavailable, ConfigurationError, PayloadError
from podjobs.fairshare import ready_count
from podjobs.ops import Inspector
from podjobs.payload import encode
from podjobs.settlement import Kind
from tests.backends import Probe
from tests.helpers import reserve_replies, wait_until

ran: list[Any] = []


@pytest.fixture(autouse=True)
def _clear_ran() -> None:
    ran.clear()


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    podjobs.configure(redis_url)
    ran.clear()
    return redis.Redis.from_url(redis_url)


@podjobs.job(name="q.add")
def add(ctx: podjobs.Context, a: int, b: int) -> int:
    ran.append(("add", a + b, ctx.attempt, ctx.queue))
    return a + b


@podjobs.job(name="q.tag", queue="default")
def tag_default(t: str) -> None:
    ran.append(t)


@podjobs.job(name="q.crit", queue="critical")
def tag_critical(t: str) -> None:
    ran.append(t)


@podjobs.job(name="q.low", queue="low")
def tag_low(t: str) -> None:
    ran.append(t)


@podjobs.job(name="q.flaky", retries=2, backoff=podjobs.constant(0.05))
def flaky(t: str, fails: int) -> None:
    ran.append(t)
    if ran.count(t) <= fails:
        raise ValueError(f"fail #{ran.count(t)}")


@podjobs.job(name="q.stamp")
def stamp(ctx: podjobs.Context, t: str) -> None:
    """Records when it ran on the backend's clock (ms), the clock due times are kept on:
    Redis' own, or this machine's for SQLite (a SQL backend's `now_ms`; a local MariaDB or
    PostgreSQL reads the same clock)."""
    if (ctx.redis_url or "").startswith("redis://"):  # a SQL pod's worker: its database URL
        sec, usec = redis.Redis.from_url(ctx.redis_url).time()
        ran.append((t, sec * 1000 + usec // 1000))
    else:
        ran.append((t, time.time_ns() // 1_000_000))


@podjobs.job(name="q.unique", unique_for=60)
def uniq(x: int) -> None:
    ran.append(("uniq", x))


def test_enqueue_and_run_with_context(probe: Probe) -> None:
    h = add.enqueue(2, 3)
    assert h.enqueued and len(h.id) == 26 and h.queue == "default"
    assert probe.ready() == 1
    with probe.worker():
        wait_until(lambda: ran, what="the job to run")
        wait_until(lambda: probe.ready() == 0 and probe.in_flight() == 0, what="the ack")
    assert ran == [("add", 5, 1, "default")]
    if not probe.sql:
        wait_until(lambda: probe.inspector().stats()["processed"] == 1, what="the counter")


def test_bulk_enqueue_is_one_round_trip(probe: Probe) -> None:
    handles = add.enqueue_many([(i, i) for i in range(500)] + [{"a": 1, "b": 1}])
    assert len(handles) == 501 and len({h.id for h in handles}) == 501
    assert probe.ready() == 501
    with probe.worker(concurrency=8):
        wait_until(lambda: len(ran) == 501, what="all bulk jobs")
    assert sorted(x[1] for x in ran) == sorted([2 * i for i in range(500)] + [2])


def test_refused_payloads_write_nothing(probe: Probe) -> None:
    with pytest.raises(PayloadError, match="datetime"):
        add.enqueue(datetime.now(), 1)
    with pytest.raises(PayloadError, match="over the limit"):
        add.enqueue("x" * (600 * 1024), 1)
    assert probe.empty()


def test_strict_priority_and_specialised_pool(probe: Probe) -> None:
    for i in range(3):
        tag_low.enqueue(f"low{i}")
        tag_default.enqueue(f"def{i}")
        tag_critical.enqueue(f"crit{i}")
    with probe.worker(queues=["critical", "default"], concurrency=1, prefetch=0, batch=1) as w:
        replies = reserve_replies(w)
        wait_until(lambda: len(ran) == 6, what="critical and default jobs")
        # a specialised pool leaves 'low' alone: once its queues are empty it asks the backend
        # for work and gets none, although 'low' holds three jobs
        after = len(replies)
        wait_until(lambda: [] in replies[after:], what="a reservation that found nothing")
    assert ran == ["crit0", "crit1", "crit2", "def0", "def1", "def2"]
    assert probe.ready("low") == 3
    with probe.worker(queues=["critical", "default", "low"], concurrency=1):
        wait_until(lambda: len(ran) == 9, what="the low queue")
    assert ran[6:] == ["low0", "low1", "low2"]


def test_retries_then_success_and_then_dead(probe: Probe) -> None:
    flaky.enqueue("ok-after-2", 2)
    flaky.enqueue("never", 99)
    with probe.worker():
        wait_until(lambda: ran.count("ok-after-2") == 3 and ran.count("never") == 3, what="retries")
        wait_until(lambda: probe.counts()["dead"] == 1, what="the dead job")
    ins = probe.inspector()
    ((dead, _),) = ins.dead()
    assert dead["args"] == ["never", 99]
    assert dead["dead_reason"] == "retries_exhausted"
    assert dead["error"]["class"] == "ValueError" and "fail #3" in dead["error"]["message"]
    assert dead["attempt"] == 3
    assert ins.stats()["dead"] == 1
    if not probe.sql:  # the SQL backend keeps no processed/failed counters (-1)
        assert ins.stats()["failed"] == 4
    assert probe.counts()["retry"] == 0


def test_dead_retry_and_delete(probe: Probe) -> None:
    flaky.enqueue("d1", 1)
    with probe.worker():
        wait_until(lambda: "d1" in ran and ran.count("d1") == 2, what="d1 to succeed on retry")
    assert probe.counts()["dead"] == 0
    probe.push_raw("garbage")
    # missing an argument: enqueue refuses it now, so write it as an older client would
    with pytest.raises(podjobs.ArgumentsMismatch, match="missing a required argument"):
        add.enqueue(1)
    probe.push_raw(encode(add.call(1).payload(int(time.time() * 1000))))
    with probe.worker():
        wait_until(lambda: probe.counts()["dead"] == 2, what="two dead jobs")
    ins = probe.inspector()
    reasons = sorted(d["dead_reason"] for d, _ in ins.dead())
    assert reasons == ["arguments", "malformed"]
    arg_dead = next(d for d, _ in ins.dead() if d["dead_reason"] == "arguments")
    assert "missing a required argument" in arg_dead["error"]["message"]
    assert ins.dead_retry(arg_dead["id"])
    assert probe.counts()["dead"] == 1 and probe.ready() == 1
    bad = next(d for d, _ in ins.dead() if d["dead_reason"] == "malformed")
    assert ins.dead_delete(bad["id"])
    assert probe.counts()["dead"] == 0


def test_unknown_job_goes_dead_and_worker_goes_on(probe: Probe) -> None:
    from podjobs.ids import new_id
    from podjobs.payload import encode

    p = {
        "id": new_id(),
        "job": "no.such.job",
        "queue": "default",
        "args": [],
        "kwargs": {},
        "enqueued_at": 0,
        "attempt": 0,
    }
    probe.push_raw(encode(p))
    add.enqueue(1, 1)
    with probe.worker():
        wait_until(lambda: ran and probe.counts()["dead"] == 1, what="dead + next job")
    ((d, _),) = probe.inspector().dead()
    assert d["dead_reason"] == "unknown_job" and "no.such.job" in d["error"]["message"]


def test_scheduled_jobs_wait_for_their_time(probe: Probe) -> None:
    stamp.enqueue_in(0.6, "in")
    stamp.enqueue_at(datetime.now(UTC) + timedelta(seconds=0.6), "at")
    with pytest.raises(ConfigurationError, match="naive datetime"):
        stamp.enqueue_at(datetime.now(), "naive")
    assert probe.counts()["scheduled"] == 2
    listed = probe.inspector().scheduled()
    due = {p["args"][0]: ms for p, ms in listed}
    assert len(listed) == 2
    with probe.worker():
        wait_until(lambda: len(ran) == 2, what="scheduled jobs")
    # each ran at or after its due time, both read on the backend's clock (the one that decides)
    assert {t for t, _ in ran} == {"in", "at"}
    assert all(ran_ms >= due[t] for t, ran_ms in ran), (ran, due)


def test_chain_runs_followup_only_after_success(probe: Probe) -> None:
    add.call(1, 2).then(tag_default, "after-add").then(tag_critical, "third").enqueue()
    flaky.call("parent-fails", 99).then(tag_default, "never").enqueue()
    with probe.worker(queues=["critical", "default"]):
        wait_until(lambda: "third" in ran, what="the chain")
        wait_until(lambda: probe.counts()["dead"] == 1, what="the failing parent to die")
    assert ran.index(("add", 3, 1, "default")) < ran.index("after-add") < ran.index("third")
    assert "never" not in ran


def test_unique_enqueue(probe: Probe) -> None:
    a = uniq.enqueue(1)
    b = uniq.enqueue(1)
    c = uniq.enqueue(2)
    assert a.enqueued and not b.enqueued and c.enqueued
    assert probe.ready() == 2
    with probe.worker():
        wait_until(lambda: len(ran) == 2, what="unique jobs")
        wait_until(lambda: probe.counts()["unique"] == 0, what="unique keys released on success")
    assert uniq.enqueue(1).enqueued


def test_unique_jobs_of_two_tenants_do_not_collide(probe: Probe) -> None:
    a, b = uniq.enqueue(7, tenant="shop-1"), uniq.enqueue(7, tenant="shop-2")
    assert a.enqueued and b.enqueued
    assert not uniq.enqueue(7, tenant="shop-1").enqueued
    assert uniq.enqueue(7).enqueued  # no tenant: a key of its own
    assert not uniq.enqueue(7).enqueued
    assert probe.counts()["unique"] == 3
    assert uniq.call(7).unique_key() == uniq.call(7).unique_key(None) != uniq.call(7).unique_key("x")


def test_unreachable_redis_is_a_clear_error() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}.*unreachable"):
        RedisBackend(f"redis://127.0.0.1:{port}/0")


def test_a_released_script_connection_serves_the_next_thread(r: redis.Redis, redis_url: str) -> None:
    """A worker's main thread hands its connection to the fetcher (Backend.release_connection):
    the next thread's first script opens none."""
    import threading

    def clients() -> int:
        return int(r.info("clients")["connected_clients"])

    def in_a_thread() -> None:
        t = threading.Thread(target=b.promote, args=(["default"],))
        t.start()
        t.join()

    b = RedisBackend(redis_url)  # check() opened the scripts' first connection
    b.promote(["default"])  # ... which this thread now keeps
    kept = clients()
    in_a_thread()  # kept: another thread opens its own
    assert clients() == kept + 1
    b.close()

    b = RedisBackend(redis_url)
    b.promote(["default"])
    kept = clients()
    b.release_connection()
    in_a_thread()
    assert clients() == kept
    b.release_connection()  # a thread that holds none: nothing to do
    b.close()


def test_a_password_reference_is_resolved_on_connect(r: redis.Redis, redis_url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL whose password is `${env:NAME}` (podjobs.secrets) connects with the secret and is
    kept, and printed, as given; an unset reference is a clear error before any connection."""
    r.acl_setuser("pj_secret_user", enabled=True, passwords=["+s3cr3t"], keys=["*"],
                  channels=["*"], commands=["+@all"])
    try:
        ref = "redis://pj_secret_user:${env:PJ_T_REDIS_PW}@" + redis_url.split("//", 1)[1]
        monkeypatch.setenv("PJ_T_REDIS_PW", "s3cr3t")
        b = RedisBackend(ref)
        assert b.promote(["default"]) == 0 and b.redis.ping()
        assert b.url == ref
        b.close()
        monkeypatch.delenv("PJ_T_REDIS_PW")
        with pytest.raises(ConfigurationError, match="PJ_T_REDIS_PW"):
            RedisBackend(ref)
    finally:
        r.acl_deluser("pj_secret_user")


def test_out_of_memory_at_enqueue_is_a_clear_error(r: redis.Redis, redis_url: str) -> None:
    old = r.config_get("maxmemory")["maxmemory"]
    r.config_set("maxmemory", "1")
    try:
        with pytest.raises(BackendUnavailable, match="out of memory"):
            add.enqueue(1, 2)
    finally:
        r.config_set("maxmemory", old)
    assert ready_count(r, "default") == 0


def test_refuses_an_evicting_redis(r: redis.Redis, redis_url: str) -> None:
    r.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(ConfigurationError, match="allkeys-lru.*noeviction"):
            RedisBackend(redis_url)
    finally:
        r.config_set("maxmemory-policy", "noeviction")


@podjobs.job(name="q.once_chain", delivery="at_most_once", unique_for=60)
def once_chain(x: int) -> None:
    ran.append(("once", x))


def test_at_most_once_runs_its_followups_and_releases_its_unique_key(probe: Probe) -> None:
    once_chain.call(1).then(tag_default, "followup").enqueue()
    with probe.worker():
        wait_until(lambda: "followup" in ran, what="the follow-up of an at-most-once job")
        wait_until(lambda: probe.counts()["unique"] == 0, what="its unique key released")
    assert once_chain.enqueue(1).enqueued


def test_the_fetcher_survives_unexpected_redis_errors(r: redis.Redis, redis_url: str) -> None:
    from podjobs.backend import RedisBackend as RB
    from podjobs.worker import Worker
    from tests.helpers import fast_config

    backend = RB(redis_url)
    real = backend.reserve
    calls = {"n": 0}

    def flaky_reserve(*a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise redis.ResponseError("BUSY Redis is busy running a script")
        return real(*a, **kw)

    backend.reserve = flaky_reserve  # type: ignore[method-assign]
    tag_default.enqueue("after-busy")
    w = Worker(backend, fast_config())
    w.start()
    try:
        wait_until(lambda: "after-busy" in ran, timeout=10, what="the job after two BUSY errors")
    finally:
        w.stop()
    assert calls["n"] >= 3


def test_bulk_payloads_are_the_same_json_as_single_ones(r: redis.Redis) -> None:
    add.enqueue_many([(1, {"k": "é"})])
    add.enqueue(1, {"k": "é"})
    add.enqueue_many([((2,), {"b": 3})])
    add.enqueue(2, b=3)
    bulk, single, bulk_kw, single_kw = (json.loads(p) for p in reversed(r.lrange(keys.queue("default"), 0, -1)))
    for p in (bulk, single, bulk_kw, single_kw):
        assert list(p)[0] == "id" and len(p["id"]) == 26
        p.pop("id")
        p.pop("enqueued_at")
    # members with their default (kwargs {}, attempt 0) are left out: a smaller queued job
    assert bulk == single == {"job": "q.add", "queue": "default", "args": [1, {"k": "é"}]}
    assert bulk_kw == single_kw == {"job": "q.add", "queue": "default", "args": [2], "kwargs": {"b": 3}}


# -- the middleware chain (podjobs.middleware) ------------------------------------------------


class Quarantine(podjobs.Middleware):
    """An app's worker-side link: refuses jobs whose first argument is "poison" before they
    run, and turns any failure of q.flaky into dead at once with its own reason."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def wants(self, jd: podjobs.JobDef, shape: int) -> bool:
        return jd.name in ("q.flaky", "q.tag")

    def worker_start(self, worker: Any) -> None:
        self.events.append("start")

    def worker_stop(self, worker: Any) -> None:
        self.events.append("stop")

    def before_start(self, d: podjobs.Delivery, jd: podjobs.JobDef) -> podjobs.Settlement | None:
        if d.args and d.args[0] == "poison":
            return podjobs.Settlement(Kind.DEAD, d.id, reason="quarantined",
                                      error={"class": "Quarantine", "message": "poison", "trace": ""})
        return None

    def on_failure(self, d: podjobs.Delivery, jd: podjobs.JobDef, out: Any,
                   s: podjobs.Settlement) -> podjobs.Settlement:
        self.events.append(f"failed {d.args[0]} as {s.kind.name}")
        return podjobs.Settlement(Kind.DEAD, d.id, reason="no_second_chance", error=s.error)

    def after_settle(self, d: podjobs.Delivery, jd: podjobs.JobDef, out: Any,
                     s: podjobs.Settlement | None) -> None:
        self.events.append(f"settled {d.args[0]} {s.kind.name if s else 'batched'}")


def test_app_middleware_shapes_settlements_on_a_real_worker(probe: Probe) -> None:
    """A link added with add_middleware takes part in the workers started after: it may end
    a delivery before the run (dead, reason its own), and replace the settlement the chain
    made (a retry becomes dead); its hooks see start, every settlement and stop."""
    q = Quarantine()
    podjobs.add_middleware(q)
    try:
        tag_default.enqueue("poison")
        tag_default.enqueue("fine")
        flaky.enqueue("once", 1)
        with probe.worker() as w:
            wait_until(lambda: probe.counts()["dead"] == 2 and "fine" in ran,
                       what="two dead, one ran")
            assert w.chain.index(q) < len(w.chain) - 1  # inside tracking, outside nothing else
        dead = {d["args"][0]: d for d in probe.dead()}
        assert dead["poison"]["dead_reason"] == "quarantined"
        assert dead["once"]["dead_reason"] == "no_second_chance" and ran.count("once") == 1
        assert "poison" not in ran
        assert q.events[0] == "start" and q.events[-1] == "stop"
        # the retries link (outer) saw the app's DEAD after the app link (inner) ran first
        assert "failed once as DEAD" in q.events
        assert {"settled poison DEAD", "settled fine batched", "settled once DEAD"} <= set(q.events)
    finally:
        podjobs.middleware.middleware().remove(q)


def test_every_lua_script_compiles_on_redis_with_its_includes_expanded(redis_url: str,
                                                                       r: redis.Redis) -> None:
    """The loader's output (podjobs.gateway) is what Redis runs: each expanded script
    compiles (SCRIPT LOAD) under the SHA-1 EVALSHA sends, and the clock include answers
    Redis' own clock."""
    from podjobs import gateway

    b = RedisBackend(redis_url)
    try:
        b.load_scripts()
        loaded = gateway.scripts()
        assert all(r.script_exists(*[s.sha for s in loaded]))
        before = b.now_ms()
        assert b.run("promote", "promote due jobs", [keys.scheduled("q"), keys.retry("q"),
                                                      keys.queue("q"), keys.wake("q")], [10]) == 0
        r.zadd(keys.scheduled("q"), {"due-now": before, "later": before + 60_000})
        b.promote(["q"])  # due means score <= now_ms() on Redis' clock
        assert r.lrange(keys.queue("q"), 0, -1) == [b"due-now"]
    finally:
        b.close()
def test_enqueue_refuses_arguments_that_do_not_fit_before_writing(probe: Probe) -> None:
    for bad in (lambda: add.enqueue(1, 2, 3), lambda: add.enqueue(1, c=2),
                lambda: add.call(1, 2).then(tag_default).enqueue(),  # a follow-up misses t
                lambda: add.enqueue_many([(1, 2), (1,)])):
        with pytest.raises(podjobs.ArgumentsMismatch, match=r"q\.add|q\.tag.*nothing was enqueued"):
            bad()
    assert probe.empty()  # nothing written anywhere


def test_handle_status_cancel_and_find(probe: Probe) -> None:
    plain = tag_default.enqueue("plain")
    assert plain.status().state == "queued" and not plain.status().tracked
    with pytest.raises(podjobs.PodjobsError, match="only tracked jobs can be cancelled"):
        plain.cancel()
    later = tag_default.call("later").tracked().enqueue(delay=600)
    assert later.status().state == "queued" and later.status().tracked
    assert podjobs.find(later.id) == later
    assert later.cancel() is True and later.status().state == "cancelled"
    assert later.cancel() is True  # cancelled before: still True
    assert probe.counts()["scheduled"] == 0  # off its scheduled set
    done = add.call(2, 3).tracked().enqueue()
    with probe.worker():
        wait_until(lambda: done.status().finished, what="the tracked job to finish")
        wait_until(lambda: plain.status().state == "unknown", what="the plain job to be gone")
    st = done.status()
    assert (st.state, st.attempts, st.result) == ("succeeded", 1, 5)
    assert int(st.record["enqueued_ms"]) <= int(st.record["started_ms"]) <= int(st.record["finished_ms"])
    assert "payload" not in st.record and "worker" not in st.record
    assert done.cancel() is False  # it ran
    with pytest.raises(podjobs.JobNotFound):
        podjobs.find(plain.id)


def test_find_job_sees_a_job_reserved_while_it_looks(r: redis.Redis, redis_url: str) -> None:
    """The in-flight hashes are read first and the queue last: a job reserved in between was
    in neither when read. The scheduler took such a miss for a vanished migration job and
    queued it a second time (a run with attempts 2 in test_scheduler)."""
    b = RedisBackend(redis_url)
    h = tag_default.enqueue("moving")
    b.heartbeat("w1", 5000, True, {"queues": "default"})

    class Racing(Inspector):
        moved = False

        def _inflight_keys(self) -> list[tuple[str, str, str]]:
            got = super()._inflight_keys()
            if not Racing.moved:  # the worker reserves it just after this read
                Racing.moved = True
                assert b.reserve("w1", ["default"], 1, "req-race")
            return got

    found = Racing(b).find_job(h.id)
    assert Racing.moved and found.where == "in_flight" and found.worker == "w1"
