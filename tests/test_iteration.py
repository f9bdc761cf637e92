"""Job iteration on real servers: checkpoints in the pod's Redis, real worker processes
stopped with SIGTERM and SIGKILL, max runtime, throttle, pause/resume/cancel through the
CLI, retries from a checkpoint, parallel parts, and a backfill on a MariaDB shard.

Those that fit the SQL backend run on each backend of `selected_kinds()` (the `probe`
fixture; checkpoints in pj_iterations there, iteration/sqlstore.py): the SIGKILL resume, max
runtime, throttle and retry-from-a-checkpoint. The iterations admin (pause/resume/cancel,
`podjobs iterations`) and parallel parts stay on Redis."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis

import podjobs
from podjobs.backend import RedisBackend
from podjobs.cli import main
from podjobs.errors import JobNotFound
from podjobs.fairshare import ready_count
from podjobs.iteration import IterationJob, State, iterkeys
from podjobs.iteration.admin import GroupProgress, Iterations
from podjobs.iteration.state import Progress
from podjobs.ops import Inspector
from tests.apps import iter_app
from tests.apps.iter_app import Count, CountEvery5, FailAt, ShortRuns, Throttled
from tests.backends import Probe, trimmed
from tests.helpers import spawn_worker, stop_proc, wait_until, worker

APP = "tests.apps.iter_app"


@pytest.fixture
def r(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    podjobs.configure(redis_url)
    monkeypatch.setenv("PODJOBS_RECORD_URL", redis_url)
    iter_app._r = None
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def rp(probe: Probe, monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    """Where the test app records (the queue itself is `probe`'s, configured by the fixture)."""
    monkeypatch.setenv("PODJOBS_RECORD_URL", probe.record_url)
    iter_app._r = None
    return redis.Redis.from_url(probe.record_url)


class View:
    """An iteration job's progress read on either backend: `Iterations` (Redis) or SqlStore's
    record (SQL: state, cursor, done, runs, interrupted, reason, error; no elapsed time)."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        if probe.sql:
            from podjobs.iteration.sqlstore import SqlStore
            from podjobs.sqlbackend import SqlBackend

            self.sql: Any = SqlStore(SqlBackend(probe.url, migrate=False))
        else:
            self.adm = Iterations(RedisBackend(probe.url))

    def get(self, jid: str) -> Any:
        if not self.probe.sql:
            return self.adm.get(jid)
        rec = self.sql.record(jid)
        if rec is None:
            return None
        return SimpleNamespace(state=State(rec.state), cursor=rec.cursor, done=rec.done,
                               runs=rec.runs, interrupted=rec.interrupted, reason=rec.reason,
                               error=rec.error)


@pytest.fixture
def view(probe: Probe) -> View:
    return View(probe)


@pytest.fixture
def adm(redis_url: str) -> Iterations:
    return Iterations(RedisBackend(redis_url))


def items(r: redis.Redis, tag: str) -> dict[int, int]:
    return {int(k): int(v) for k, v in r.hgetall(f"rec:items:{tag}").items()}


def hooks(r: redis.Redis, tag: str) -> list[str]:
    return [x.decode() for x in r.lrange(f"rec:hooks:{tag}", 0, -1)]


def state(adm: Iterations | View, jid: str) -> State | None:
    p = adm.get(jid)
    return p.state if p else None


def prog(adm: Iterations | View, jid: str) -> Progress:
    p = adm.get(jid)
    assert p is not None
    return p


def in_flight(redis_url: str, *ids: str) -> list[str]:
    """Those of `ids` a worker holds (reserved, running or not yet settled)."""
    ins = Inspector(RedisBackend(redis_url))

    def held(i: str) -> bool:
        try:
            return ins.find_job(i).where == "in_flight"
        except JobNotFound:
            return False

    return [i for i in ids if held(i)]


def cli(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> Any:
    capsys.readouterr()
    assert main(["iterations", *argv, "--redis", url, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_runs_to_completion_with_progress_and_cli(r: redis.Redis, redis_url: str, adm: Iterations,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    h = Count.enqueue(tag="a", n=50)
    assert state(adm, h.id) is State.ENQUEUED
    with worker(redis_url):
        wait_until(lambda: state(adm, h.id) is State.SUCCEEDED, what="the job to finish")
    p = prog(adm, h.id)
    assert (p.done, p.total, p.runs, p.interrupted, p.cursor) == (50, 50, 1, 0, 49)
    assert p.rate and p.rate > 0 and p.eta_s == 0 and p.finished_ms
    assert items(r, "a") == {i: 1 for i in range(50)}
    assert hooks(r, "a") == ["start", "complete", "shutdown:49"]
    listed = cli(capsys, redis_url, "list")
    assert [(x["job_id"], x["state"], x["done"]) for x in listed] == [(h.id, "succeeded", 50)]
    assert listed[0]["finished_at"].endswith("Z")
    shown = cli(capsys, redis_url, "show", h.id)
    assert shown["percent"] == 100.0 and shown["job"] == "it.count"
    assert main(["iterations", "show", "NOPE", "--redis", redis_url]) == 1


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_sigterm_mid_iteration_stops_within_one_item_and_resumes(
        r: redis.Redis, redis_url: str, adm: Iterations, tmp_path: Path, isolation: str) -> None:
    # items of 0.2 s: the stop (signal -> main thread -> ctx.stopping) must land within the item
    # in progress even on a loaded machine, where 0.05 s items once let a second one start
    h = Count.enqueue(tag="t", n=30, sleep=0.2)
    w = spawn_worker(redis_url, "--isolation", isolation, app=APP, concurrency=2,
                     log=tmp_path / "w1.log")
    try:
        wait_until(lambda: r.llen("rec:order:t") >= 5, timeout=15, what="some items")
        at_signal = r.llen("rec:order:t")
        w.send_signal(signal.SIGTERM)
        assert w.wait(10) == 0  # a bound, not a figure: how soon is the item count below
    finally:
        stop_proc(w)
    n = r.llen("rec:order:t")
    assert n - at_signal <= 1, (at_signal, n)  # the item in progress, no other
    p = prog(adm, h.id)
    assert (p.state, p.interrupted, p.reason, p.done, p.cursor) == (
        State.INTERRUPTED, 1, "shutdown", n, n - 1)
    found = Inspector(RedisBackend(redis_url)).find_job(h.id)
    assert found.where == "queue" and found.payload.get("attempt", 0) == 0  # a resume is not a retry
    assert found.payload["cursor"] == n - 1
    w2 = spawn_worker(redis_url, "--isolation", isolation, app=APP, concurrency=2,
                      log=tmp_path / "w2.log")
    try:
        wait_until(lambda: state(adm, h.id) is State.SUCCEEDED, timeout=30, what="the resumed job")
    finally:
        stop_proc(w2)
    assert items(r, "t") == {i: 1 for i in range(30)}
    assert hooks(r, "t") == ["start", f"shutdown:{n - 1}", f"resume:{n - 1}:1", "complete",
                             "shutdown:29"]
    assert prog(adm, h.id).runs == 2


@pytest.mark.parametrize("job", [Count, CountEvery5], ids=["checkpoint-every-item", "every-5"])
def test_sigkill_mid_iteration_then_a_new_worker_resumes_from_the_checkpoint(
        rp: redis.Redis, probe: Probe, view: View, tmp_path: Path,
        job: type[IterationJob]) -> None:
    if job is CountEvery5 and trimmed(probe):
        pytest.skip("make test runs the every-item variant on SQL (PODJOBS_TEST_BACKENDS: both)")
    r, adm = rp, view
    every = job.checkpoint_every or 1
    h = job.enqueue(tag="k", n=80, sleep=0.02)
    w1 = probe.spawn_worker(app=APP, concurrency=2, log=tmp_path / "w1.log")
    try:
        wait_until(lambda: r.llen("rec:order:k") >= 17, timeout=15, what="some items")
        w1.kill()
        w1.wait(5)
    finally:
        stop_proc(w1)
    checkpoint = prog(adm, h.id).cursor
    assert prog(adm, h.id).state is State.RUNNING  # as far as the backend knows
    w2 = probe.spawn_worker(app=APP, concurrency=2, log=tmp_path / "w2.log")  # ttl 1 s
    try:
        wait_until(lambda: state(adm, h.id) is State.SUCCEEDED, timeout=20, what="the job to resume")
    finally:
        stop_proc(w2)
    c = items(r, "k")
    assert set(c) == set(range(80))  # every item at least once
    twice = sorted(k for k, v in c.items() if v > 1)
    assert max(c.values()) <= 2 and len(twice) <= every, twice  # none twice beyond one interval
    assert all(k > checkpoint for k in twice)
    assert f"resume:{checkpoint}:1" in hooks(r, "k")  # from the checkpoint, attempt unchanged
    p = prog(adm, h.id)
    assert (p.runs, p.interrupted, p.done) == (2, 0, 80)


def test_max_runtime_reenqueues_without_counting_an_attempt(
        rp: redis.Redis, probe: Probe, view: View) -> None:
    r, adm = rp, view
    h = ShortRuns.enqueue(tag="m", n=30, sleep=0.02)  # about 10 items per 0.2 s run
    with probe.worker():
        wait_until(lambda: state(adm, h.id) is State.SUCCEEDED, timeout=15, what="the job")
    p = prog(adm, h.id)
    assert p.interrupted >= 2 and p.runs == p.interrupted + 1
    assert items(r, "m") == {i: 1 for i in range(30)}
    resumes = [x for x in hooks(r, "m") if x.startswith("resume")]
    assert len(resumes) == p.interrupted and all(x.endswith(":1") for x in resumes)
    assert probe.counts()["retry"] == 0 and probe.counts()["dead"] == 0
    if not probe.sql:  # SQL: no failed counter, no elapsed time kept
        assert probe.inspector().stats()["failed"] == 0
        assert p.elapsed_s >= 0.5  # total run time is kept across runs


def test_throttle_backs_off_then_resumes(rp: redis.Redis, probe: Probe, view: View) -> None:
    r, adm = rp, view
    r.set("rec:throttle", 1)
    h = Throttled.enqueue(tag="th", n=5)
    with probe.worker():
        # (SQL: the job's row is written by its first run, not by the enqueue)
        wait_until(lambda: (p := adm.get(h.id)) is not None and p.interrupted >= 2,
                   what="two throttled runs")
        p = prog(adm, h.id)
        assert p.reason == "throttled" and p.done == 0 and not items(r, "th")
        r.delete("rec:throttle")
        wait_until(lambda: state(adm, h.id) is State.SUCCEEDED, what="the job after the throttle")
    assert items(r, "th") == {i: 1 for i in range(5)}
    assert probe.counts()["retry"] == 0 and probe.counts()["dead"] == 0
    if not probe.sql:
        assert probe.inspector().stats()["failed"] == 0


def test_pause_resume_and_cancel_running_jobs_through_the_cli(
        r: redis.Redis, redis_url: str, adm: Iterations, capsys: pytest.CaptureFixture[str]) -> None:
    a = Count.enqueue(tag="p", n=150, sleep=0.01)
    b = Count.enqueue(tag="c", n=150, sleep=0.01)
    with worker(redis_url, concurrency=2):
        wait_until(lambda: r.llen("rec:order:p") >= 5 and r.llen("rec:order:c") >= 5, what="items")
        assert cli(capsys, redis_url, "pause", a.id)["states"] == {a.id: "running"}  # stops at the boundary
        assert cli(capsys, redis_url, "cancel", b.id)["states"] == {b.id: "cancelling"}
        wait_until(lambda: state(adm, a.id) is State.PAUSED, what="the pause")
        wait_until(lambda: state(adm, b.id) is State.CANCELLED, what="the cancel")
        na, nb = r.llen("rec:order:p"), r.llen("rec:order:c")
        # both stopped: settled, no longer in the worker's hands (nothing can add an item)
        wait_until(lambda: not in_flight(redis_url, a.id, b.id), what="both jobs to settle")
        assert (r.llen("rec:order:p"), r.llen("rec:order:c")) == (na, nb)
        shown = cli(capsys, redis_url, "show", a.id)
        assert (shown["state"], shown["cursor"], shown["done"]) == ("paused", na - 1, na)
        assert r.hexists(iterkeys.job(a.id), "parked")
        assert cli(capsys, redis_url, "resume", a.id)["states"] == {a.id: "enqueued"}
        wait_until(lambda: state(adm, a.id) is State.SUCCEEDED, what="the resumed job")
    assert items(r, "p") == {i: 1 for i in range(150)}
    assert f"resume:{na - 1}:1" in hooks(r, "p")
    assert nb < 150 and prog(adm, b.id).done == nb


def test_pause_and_cancel_jobs_still_in_the_queue(r: redis.Redis, redis_url: str,
                                                  adm: Iterations) -> None:
    a = Count.enqueue(tag="wa", n=20)
    b = Count.enqueue(tag="wb", n=20)
    assert adm.pause(a.id) == {a.id: "paused"}
    assert adm.cancel(b.id) == {b.id: "cancelled"}
    with worker(redis_url):
        wait_until(lambda: r.hexists(iterkeys.job(a.id), "parked"), what="the job to be parked")
        wait_until(lambda: ready_count(r, "default") == 0
                   and all(r.hlen(k) == 0 for k in r.keys("pj:inflight:*")), what="the queue to drain")
        assert not items(r, "wa") and not items(r, "wb")
        assert state(adm, a.id) is State.PAUSED and state(adm, b.id) is State.CANCELLED
        assert adm.resume(a.id) == {a.id: "enqueued"}
        wait_until(lambda: state(adm, a.id) is State.SUCCEEDED, what="the resumed job")
    assert items(r, "wa") == {i: 1 for i in range(20)} and not items(r, "wb")


def test_an_error_retries_from_the_last_checkpoint(rp: redis.Redis, probe: Probe,
                                                   view: View) -> None:
    r, adm = rp, view
    h = FailAt.enqueue(tag="e", n=10, fail_at=6)
    with probe.worker():
        wait_until(lambda: state(adm, h.id) is State.SUCCEEDED, what="the retried job")
    assert items(r, "e") == {i: 1 for i in range(10)}
    assert hooks(r, "e") == ["start", "resume:5:2", "complete", "shutdown:9"]  # attempt 2
    p = prog(adm, h.id)
    assert (p.runs, p.interrupted, p.error) == (2, 0, "")


def test_parallel_parts_run_at_once_with_one_view_and_one_callback(
        r: redis.Redis, redis_url: str, adm: Iterations, capsys: pytest.CaptureFixture[str]) -> None:
    ph = Count.enqueue_parallel(4, span=(0, 100), tag="par", n=100, sleep=0.005,
                                then=iter_app.done.call("par"))
    assert [(b["start"], b["stop"]) for b in ph.bounds] == [(0, 25), (25, 50), (50, 75), (75, 100)]
    g = adm.show(ph.group)
    assert isinstance(g, GroupProgress) and g.state is State.ENQUEUED and len(g.parts) == 4
    with worker(redis_url, concurrency=4):
        wait_until(lambda: r.llen("rec:callback:par") == 1, what="the completion callback")
    g = adm.show(ph.group)
    assert isinstance(g, GroupProgress)
    assert (g.state, g.done, g.total, g.callback_fired) == (State.SUCCEEDED, 100, 100, True)
    assert max(p.started_ms or 0 for p in g.parts) < min(p.finished_ms or 0 for p in g.parts)
    assert items(r, "par") == {i: 1 for i in range(100)}
    shown = cli(capsys, redis_url, "show", ph.group)
    assert shown["state"] == "succeeded" and len(shown["parts"]) == 4
    assert r.llen("rec:callback:par") == 1


# -- a backfill on a MariaDB shard -------------------------------------------------------

ROWS = 200_000
BATCH = 1_000


def _checksum(engine: Any) -> tuple[int, ...]:
    from sqlalchemy import text

    with engine.connect() as c:
        row = c.execute(text(
            "SELECT COUNT(*), SUM(value), SUM(processed), MIN(processed), MAX(processed), "
            "BIT_XOR(CRC32(CONCAT_WS(',', grp, id, value, processed))) FROM iter_items")).one()
    return tuple(int(x) for x in row)


def test_backfill_on_mariadb_across_interruptions_matches_an_uninterrupted_run(
        pods: Any, r: redis.Redis, adm: Iterations) -> None:
    from sqlalchemy import create_engine, insert, text
    from sqlalchemy.orm import Session

    from podjobs.iteration.testing import iterate

    p1 = pods.pods[0]
    engine = create_engine(p1.shard_url)
    iter_app.metadata.create_all(engine)
    with engine.begin() as c:
        for lo in range(0, ROWS, 20_000):
            c.execute(insert(iter_app.items), [
                {"grp": i % 7, "id": i, "value": i, "processed": 0} for i in range(lo, lo + 20_000)])
    # uninterrupted, inline
    with Session(engine) as s:
        run = iterate(iter_app.BackfillUninterrupted, db=s, batch=BATCH)
        s.commit()
    assert run.state == "succeeded" and run.done == ROWS // BATCH
    expected = _checksum(engine)
    assert expected[2:5] == (ROWS, 1, 1)
    with engine.begin() as c:
        c.execute(text("UPDATE iter_items SET value = id, processed = 0"))
    # through workers that stop (SIGTERM-like graceful stop) each time the backfill got 20
    # batches further, and 0.3 s max runtime
    h = iter_app.Backfill.enqueue(batch=BATCH)

    def done() -> int:
        p = adm.get(h.id)
        return p.done if p else 0

    for _ in range(60):
        before = done()
        with worker(p1.redis_url, shard_url=p1.shard_url, pod=p1.name, concurrency=1):
            wait_until(lambda b=before: done() >= b + 20 or state(adm, h.id) is State.SUCCEEDED,
                       timeout=60, what="20 more batches")
        if state(adm, h.id) is State.SUCCEEDED:
            break
    p = prog(adm, h.id)
    assert p.state is State.SUCCEEDED and p.done == p.total == ROWS // BATCH
    assert p.interrupted >= 3, p
    print(f"backfill: {p.runs} runs, {p.interrupted} interruptions, {p.elapsed_s:.1f} s running")
    assert _checksum(engine) == expected
    engine.dispose()


def test_keyset_parallel_backfill_on_mariadb(pods: Any, r: redis.Redis, adm: Iterations) -> None:
    from sqlalchemy import create_engine, insert, select
    from sqlalchemy.orm import Session

    from podjobs.iteration import enumerators

    p1 = pods.pods[0]
    engine = create_engine(p1.shard_url)
    iter_app.metadata.create_all(engine)
    with engine.begin() as c:
        c.execute(insert(iter_app.items), [{"grp": i % 3, "id": i, "value": i, "processed": 0}
                                           for i in range(3000)])
    t = iter_app.items
    with Session(engine) as s:
        bounds = enumerators.keyset_parts(s, select(t.c.grp, t.c.id), [t.c.grp, t.c.id], 3)
    ph = iter_app.BackfillPart.enqueue_parallel(bounds, batch=100, then=iter_app.done.call("kp"))
    with worker(p1.redis_url, shard_url=p1.shard_url, pod=p1.name, concurrency=3):
        wait_until(lambda: r.llen("rec:callback:kp") == 1, timeout=20, what="the callback")
    g = adm.group(ph.group)
    assert g is not None and g.state is State.SUCCEEDED and g.done == g.total == 30
    with engine.connect() as c:
        rows = c.execute(select(t.c.processed, t.c.value, t.c.id)).all()
    assert len(rows) == 3000 and all(p == 1 and v == 2 * i for p, v, i in rows)
    engine.dispose()
