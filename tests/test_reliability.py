"""Faults on real worker processes: SIGKILL, SIGSTOP, SIGTERM, process isolation; on each
backend of `selected_kinds()` (the `probe` fixture: redis and sqlite unless
PODJOBS_TEST_BACKENDS says otherwise). The test app records on pod p1's Redis on every kind."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis

from podjobs import keys
from tests.apps import core_app
from tests.backends import Probe, trimmed
from tests.helpers import stop_proc, wait_until


@pytest.fixture
def r(probe: Probe, monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    """Where the test app records (the queue itself is `probe`'s, configured by the fixture)."""
    monkeypatch.setenv("PODJOBS_RECORD_URL", probe.record_url)
    core_app._r = None
    return redis.Redis.from_url(probe.record_url)


def counts(r: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall("rec:count").items()}


def test_sigkill_mid_job_loses_nothing(r: redis.Redis, probe: Probe, tmp_path: Path) -> None:
    n = 60
    core_app.record.enqueue_many([(f"j{i}", 0.05) for i in range(n)])
    w1 = probe.spawn_worker(concurrency=4, log=tmp_path / "w1.log")
    wait_until(lambda: r.llen("rec:done") >= 10, what="some jobs done")
    w1.kill()
    w1.wait()
    # jobs w1 had reserved sit in its in-flight hashes until its heartbeat expires
    w2 = probe.spawn_worker(concurrency=4, log=tmp_path / "w2.log")
    try:
        wait_until(lambda: len(counts(r)) == n, timeout=20, what="every job to run at least once")
    finally:
        stop_proc(w2)
    c = counts(r)
    dupes = {k: v for k, v in c.items() if v > 1}
    # only jobs that were running (or buffered) in the killed worker may run twice
    assert len(dupes) <= 8, dupes
    if not probe.sql:  # the SQL backend keeps no counters
        assert probe.inspector().stats()["recovered"] >= 1
    assert probe.ready() == 0


def test_sigstopped_worker_is_taken_over_and_its_late_ack_is_harmless(
    r: redis.Redis, probe: Probe, tmp_path: Path
) -> None:
    core_app.record.call("slow", 1.5).then(core_app.record, "child").enqueue()
    w1 = probe.spawn_worker(concurrency=1, log=tmp_path / "w1.log")
    wait_until(lambda: r.lrange("rec:started", 0, -1) == [b"slow"], what="the slow job to start")
    w1.send_signal(signal.SIGSTOP)
    w2 = probe.spawn_worker(concurrency=1, log=tmp_path / "w2.log")
    try:
        # w2 reaps w1 after its 1 s heartbeat TTL and runs the job again
        wait_until(
            lambda: r.lrange("rec:started", 0, -1).count(b"slow") == 2,
            timeout=10,
            what="the job to be taken over",
        )
        w1.send_signal(signal.SIGCONT)
        wait_until(
            lambda: counts(r).get("child") == 1 and counts(r).get("slow") == 2,
            timeout=10,
            what="both runs and one child",
        )
        wait_until(lambda: probe.ready() == 0 and probe.in_flight() == 0, what="acks")
        if not probe.sql:
            wait_until(lambda: r.get(keys.stat("processed")) == b"2", what="the counter")
    finally:
        stop_proc(w1)
        stop_proc(w2)
    assert counts(r)["child"] == 1  # the late ack enqueued no second child
    if not probe.sql:  # slow once (the late ack counted nothing) + child
        assert int(r.get(keys.stat("processed"))) == 2


def test_sigterm_finishes_running_jobs_and_gives_the_rest_back(
    r: redis.Redis, probe: Probe, tmp_path: Path
) -> None:
    core_app.record.enqueue_many([(f"g{i}", 0.5) for i in range(10)])
    w = probe.spawn_worker("--shutdown-timeout", "5", concurrency=2, log=tmp_path / "w.log")
    wait_until(lambda: r.llen("rec:started") >= 2, what="two jobs running")
    assert stop_proc(w, signal.SIGTERM) == 0
    started = [x.decode() for x in r.lrange("rec:started", 0, -1)]
    done = [x.decode() for x in r.lrange("rec:done", 0, -1)]
    assert sorted(started) == sorted(done)  # every started job finished
    assert probe.ready() == 10 - len(done)  # the rest is back in the queue
    assert probe.in_flight() == 0 and probe.n_workers() == 0


def test_sigterm_gives_back_a_job_that_outlives_the_grace_period(
    r: redis.Redis, probe: Probe, tmp_path: Path
) -> None:
    core_app.record.enqueue("long", 30)
    w = probe.spawn_worker("--shutdown-timeout", "0.5", concurrency=1, log=tmp_path / "w.log")
    wait_until(lambda: r.llen("rec:started") == 1, what="the long job to start")
    stop_proc(w, signal.SIGTERM)
    assert probe.ready() == 1
    assert probe.in_flight() == 0


def test_process_isolation_kills_on_timeout_and_memory_and_survives(
    r: redis.Redis, probe: Probe, tmp_path: Path
) -> None:
    core_app.sleepy.enqueue("t", 30)  # timeout 1 s, one retry, then dead
    core_app.hog.enqueue(400)  # limit 150 MiB
    w = probe.spawn_worker("--isolation", "process", concurrency=2, log=tmp_path / "w.log")
    try:
        wait_until(
            lambda: probe.counts()["dead"] == 2, timeout=30, what="timeout and memory jobs to die"
        )
        core_app.record.enqueue("after")
        wait_until(lambda: counts(r).get("after") == 1, timeout=15, what="the worker to go on")
    finally:
        assert stop_proc(w) == 0
    dead = {d["job"]: d for d in probe.dead()}
    assert dead["t.sleepy"]["error"]["class"] == "JobTimeout" and dead["t.sleepy"]["attempt"] == 2
    assert dead["t.hog"]["error"]["class"] == "MemoryLimit"
    assert "over the limit of 150 MiB" in dead["t.hog"]["error"]["message"]


def test_thread_timeout_interrupts_the_job(r: redis.Redis, probe: Probe, tmp_path: Path) -> None:
    core_app.loop.enqueue("tt", 30)
    w = probe.spawn_worker(concurrency=1, log=tmp_path / "w.log")
    try:
        wait_until(lambda: probe.counts()["dead"] == 1, timeout=15, what="the timed-out job to die")
    finally:
        stop_proc(w)
    assert r.lrange("rec:started", 0, -1) == [b"tt:1", b"tt:2"]  # ran, timed out, retried once
    assert r.lrange("rec:done", 0, -1) == []
    (d,) = probe.dead()
    assert d["error"]["class"] == "JobTimeout"


def test_at_most_once_never_reruns(r: redis.Redis, probe: Probe, tmp_path: Path) -> None:
    core_app.once.enqueue("killed", 5)
    core_app.once.enqueue("fail-1")
    w1 = probe.spawn_worker(concurrency=2, log=tmp_path / "w1.log")
    wait_until(
        lambda: counts(r).get("killed") == 1 and counts(r).get("fail-1") == 1, what="both started"
    )
    wait_until(lambda: probe.counts()["dead"] == 1, what="the failed one to die without retry")
    w1.kill()
    w1.wait()
    w2 = probe.spawn_worker(concurrency=2, log=tmp_path / "w2.log")
    try:
        wait_until(lambda: probe.n_workers() == 1, timeout=10, what="w1 to be reaped")
    finally:
        stop_proc(w2)
    assert counts(r) == {"killed": 1, "fail-1": 1}
    assert probe.ready() == 0


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_sigterm_interrupts_a_long_job_which_resumes_from_its_checkpoint(
        r: redis.Redis, probe: Probe, tmp_path: Path, isolation: str) -> None:
    if isolation == "thread" and trimmed(probe):
        pytest.skip("make test runs the process variant on SQL (PODJOBS_TEST_BACKENDS: both)")
    core_app.resumable.enqueue("long", 200)
    w1 = probe.spawn_worker("--isolation", isolation, "--shutdown-timeout", "10",
                      concurrency=1, log=tmp_path / "w1.log")
    wait_until(lambda: r.llen("rec:steps:long") >= 20, timeout=20, what="some steps")
    assert stop_proc(w1, signal.SIGTERM) == 0
    (back,) = probe.ready_payloads()
    import json

    payload = json.loads(back)
    assert payload.get("attempt", 0) == 0 and 20 <= payload["cursor"] < 200  # resumed, not retried
    w2 = probe.spawn_worker("--isolation", isolation, concurrency=1, log=tmp_path / "w2.log")
    try:
        wait_until(lambda: r.lrange("rec:done", 0, -1) == [b"long"], timeout=20, what="completion")
    finally:
        stop_proc(w2)
    steps = [int(x) for x in r.lrange("rec:steps:long", 0, -1)]
    assert steps == list(range(200))  # every step once: the checkpoint is after each step
    assert [x.decode() for x in r.lrange("rec:attempts:long", 0, -1)] == ["1:0", f"1:{payload['cursor']}"]
    if not probe.sql:
        assert probe.inspector().stats()["failed"] == 0
