"""Signals on real worker processes: SIGTERM's deadline (thread and process isolation),
process-isolation children (eager start, timeouts on the job's own run time), and the
operator signals (TSTP/USR1 quiet, TTIN/QUIT dump, HUP/USR2/CONT ignored), also sent to the
whole process group. Jobs: tests/apps/signals_app.py; the tests compare orders of events in
Redis and wait on Redis reads or log lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import podjobs
from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.fairshare import ready_count
from podjobs.ops import Inspector
from tests.apps import signals_app
from tests.helpers import spawn_worker, stop_proc, wait_until

APP = "tests.apps.signals_app"


@pytest.fixture
def r(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    podjobs.configure(redis_url)
    monkeypatch.setenv("PODJOBS_RECORD_URL", redis_url)
    monkeypatch.setenv("PODJOBS_TEST_IMPORT_S", "0")
    signals_app._r = None
    conn = redis.Redis.from_url(redis_url)
    yield conn
    # a child that outlived its worker (the bug these tests catch) must not outlive the test
    for run in _runs(conn):
        _kill_if_alive(int(run.split(":")[1]))


def _ledger(r: redis.Redis) -> list[tuple[str, str]]:
    return [tuple(x.decode().split(" ", 1)) for x in r.lrange("rec:ledger", 0, -1)]  # type: ignore[misc]


def _runs(r: redis.Redis) -> list[str]:
    return [run for ev, run in _ledger(r) if ev == "start"]


def _kill_if_alive(pid: int) -> None:
    if pid != os.getpid():
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def overlaps(ledger: list[tuple[str, str]]) -> int:
    """Ticks of a run of a job written after a later run of the same job started."""
    started: dict[str, list[str]] = {}
    n = 0
    for ev, run in ledger:
        tag = run.split(":")[0]
        runs = started.setdefault(tag, [])
        if ev == "start":
            runs.append(run)
        elif run in runs and runs.index(run) < len(runs) - 1:
            n += 1
    return n


def _log_has(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text(errors="replace")


def _exit_time(p: subprocess.Popen[bytes], limit: float) -> float | None:
    """Seconds from now until `p` exits, or None when it is still alive after `limit`."""
    t0 = time.monotonic()
    try:
        p.wait(limit)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - t0


# -- SIGTERM's deadline ---------------------------------------------------------------


@pytest.mark.parametrize("stubborn", [False, True], ids=["unwinds", "needs-kill"])
def test_sigterm_process_isolation_exits_and_no_given_back_job_overlaps(
        r: redis.Redis, redis_url: str, tmp_path: Path, stubborn: bool) -> None:
    """At the deadline the children of the jobs given back are stopped (TERM, then KILL), so
    another worker's run of those jobs never overlaps theirs, and the worker exits."""
    # they ignore ctx.stopping; stubborn ones swallow the SIGTERM's SystemExit as well
    signals_app.ledger.enqueue_many([("a", 60, stubborn), ("b", 60, stubborn)])
    w1 = spawn_worker(redis_url, "--isolation", "process", "--shutdown-timeout", "1",
                      app=APP, concurrency=2, log=tmp_path / "w1.log")
    w2 = None
    try:
        wait_until(lambda: len(_runs(r)) == 2, timeout=20, what="both jobs to start in w1")
        first = _runs(r)
        # w2 stops quickly at the end too (its runs of 60 s ignore ctx.stopping)
        w2 = spawn_worker(redis_url, "--shutdown-timeout", "1", app=APP, concurrency=2,
                          log=tmp_path / "w2.log")
        wait_until(lambda: r.scard(keys.WORKERS) == 2, what="w2 to register")
        w1.send_signal(signal.SIGTERM)
        took = _exit_time(w1, 1 + 5)
        wait_until(lambda: len(_runs(r)) == 4, timeout=15, what="w2 to run both given-back jobs")
        second = [x for x in _runs(r) if x not in first]
        # let w2's runs tick: a child of w1 still alive would tick meanwhile too
        wait_until(lambda: all(sum(1 for ev, run in _ledger(r) if ev == "tick" and run == s) >= 5
                               for s in second), what="w2's runs to tick")
        n = overlaps(_ledger(r))
        alive = [run for run in first if _alive(int(run.split(":")[1]))]
        print(f"w1 exited after {took} s; overlapping ticks: {n}; w1 children alive: {alive}")
        assert took is not None, "w1 still runs 6 s after SIGTERM with --shutdown-timeout 1"
        assert n == 0, f"{n} ticks of w1's runs after w2 started the same jobs"
        assert not alive
        assert w1.returncode == 0
    finally:
        stop_proc(w1, timeout=1)
        if w2 is not None:
            stop_proc(w2)


@pytest.mark.parametrize("clinging", [False, True], ids=["ignores-stopping", "leaves-a-thread"])
def test_sigterm_thread_isolation_exits_with_a_job_that_ignores_stopping(
        r: redis.Redis, redis_url: str, tmp_path: Path, clinging: bool) -> None:
    if clinging:  # also leaves a non-daemon thread behind: the interpreter's exit would wait
        signals_app.clinging.enqueue("t")
    else:
        signals_app.ledger.enqueue("t", 60)
    w = spawn_worker(redis_url, "--shutdown-timeout", "1", app=APP, concurrency=1,
                     log=tmp_path / "w.log")
    try:
        wait_until(lambda: len(_runs(r)) == 1, timeout=20, what="the job to start")
        w.send_signal(signal.SIGTERM)
        took = _exit_time(w, 1 + 5)
        print(f"thread worker exited after {took} s")
        assert took is not None, "the worker still runs 6 s after SIGTERM with --shutdown-timeout 1"
        assert w.returncode == 0
    finally:
        stop_proc(w, timeout=1)
    assert ready_count(r, "default") == 1  # given back
    assert not r.keys("pj:inflight:*") and r.scard(keys.WORKERS) == 0


def test_sigkill_of_a_process_worker_takes_its_children_along(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    """Else they would go on running jobs that the reaper hands to other workers."""
    signals_app.ledger.enqueue_many([("k1", 60), ("k2", 60)])
    w = spawn_worker(redis_url, "--isolation", "process", app=APP, concurrency=2,
                     log=tmp_path / "w.log")
    try:
        wait_until(lambda: len(_runs(r)) == 2, timeout=20, what="both jobs to start")
        w.kill()
        w.wait()
        pids = [int(run.split(":")[1]) for run in _runs(r)]
        wait_until(lambda: not any(_alive(p) for p in pids), what="the children to die")
    finally:
        stop_proc(w, timeout=1)


# -- process isolation: eager children, timeouts on the job's own run time ----------------


def test_process_timeout_counts_the_jobs_own_run_time_not_the_childs_start(
        r: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODJOBS_TEST_IMPORT_S", "1.5")  # a heavy app: 1.5 s to import
    signals_app.timed.enqueue("slow-import")  # timeout 2 s, no retries; queued before the worker
    w = spawn_worker(redis_url, "--isolation", "process", app=APP, concurrency=1,
                     log=tmp_path / "w.log")
    try:
        wait_until(lambda: r.zcard(keys.DEAD) == 1, timeout=25, what="the job to time out")
    finally:
        stop_proc(w)
    ((dead, _),) = Inspector(RedisBackend(redis_url)).dead()
    runs = [json.loads(x) for x in r.lrange("rec:timed", 0, -1)]
    ran_ms = dead["died_at"] - runs[0]["started_ms"] if runs else 0
    print(f"the job ran {ran_ms} ms before it was killed")
    assert dead["error"]["class"] == "JobTimeout"
    assert len(runs) == 1 and ran_ms >= 2000, f"killed after {ran_ms} ms of its own run time"


def test_process_children_start_with_the_worker_and_again_when_recycled(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    w = spawn_worker(redis_url, "--isolation", "process", "--max-jobs-per-child", "1",
                     app=APP, concurrency=2, log=tmp_path / "w.log")
    try:
        # no job yet: the children import the app when the worker starts
        wait_until(lambda: r.llen("rec:ready") == 2, timeout=20, what="both children to start")
        ready = {int(x) for x in r.lrange("rec:ready", 0, -1)}
        signals_app.ledger.enqueue("first", 0)
        wait_until(lambda: any(ev == "end" for ev, _ in _ledger(r)), what="the first job")
        (run,) = _runs(r)
        assert int(run.split(":")[1]) in ready  # it ran in a child that had imported the app
        # recycled after one job: the replacement starts at once, not on the next job
        wait_until(lambda: r.llen("rec:ready") == 3, timeout=20, what="the replacement to start")
    finally:
        assert stop_proc(w) == 0


# -- operator signals -----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR2, signal.SIGQUIT, signal.SIGCONT])
def test_signals_that_leave_a_worker_running(
        r: redis.Redis, redis_url: str, tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "w.log"
    signals_app.ledger.enqueue("j", 1.5)
    w = spawn_worker(redis_url, app=APP, concurrency=1, log=log)
    try:
        wait_until(lambda: len(_runs(r)) == 1, timeout=20, what="the job to start")
        w.send_signal(sig)
        wait_until(lambda: _log_has(log, f"got {sig.name}"), what=f"the worker to log {sig.name}")
        wait_until(lambda: [ev for ev, _ in _ledger(r)][-1] == "end", what="the job to finish")
        assert w.poll() is None
        signals_app.ledger.enqueue("k", 0)  # still fetching
        wait_until(lambda: len(_runs(r)) == 2, what="a new job to run")
    finally:
        assert stop_proc(w) == 0


@pytest.mark.parametrize("sig", [signal.SIGTSTP, signal.SIGUSR1])
def test_tstp_and_usr1_quiet_a_worker_until_sigterm(
        r: redis.Redis, redis_url: str, tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "w.log"
    signals_app.ledger.enqueue("running", 1.5)
    signals_app.ledger.enqueue_many([(f"q{i}", 0) for i in range(3)])
    w = spawn_worker(redis_url, app=APP, concurrency=1, log=log)
    try:
        wait_until(lambda: len(_runs(r)) == 1, timeout=20, what="the first job to start")
        w.send_signal(sig)
        wait_until(lambda: _log_has(log, "quiet"), what="the worker to go quiet")
        wait_until(lambda: r.get(keys.stat("processed")) == b"1", what="the running job to finish")
        assert len(_runs(r)) == 1  # nothing else started
        assert ready_count(r, "default") == 3  # what it had buffered went back
        assert not r.keys("pj:inflight:*")
        assert w.poll() is None and r.scard(keys.WORKERS) == 1  # up until SIGTERM
    finally:
        assert stop_proc(w) == 0


def test_ttin_dumps_threads_and_running_jobs(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    h = signals_app.ledger.enqueue("dumped", 2)
    w = spawn_worker(redis_url, app=APP, concurrency=1, log=log)
    try:
        wait_until(lambda: len(_runs(r)) == 1, timeout=20, what="the job to start")
        # its first job runs alone briefly (worker.FIRST_JOB_ALONE_S): every thread once started
        wait_until(lambda: _log_has(log, "started: queues"), what="the worker's other threads")
        w.send_signal(signal.SIGTTIN)
        wait_until(lambda: _log_has(log, "podjobs-exec-0"), what="the dump")
        text = log.read_text()
        assert h.id in text and "s.ledger" in text and "in ledger" in text  # job, and its frame
        assert "podjobs-heartbeat" in text  # every thread
        wait_until(lambda: [ev for ev, _ in _ledger(r)][-1] == "end", what="the job to finish")
        assert w.poll() is None
    finally:
        assert stop_proc(w) == 0


def test_signals_to_the_process_group_never_kill_a_child_mid_job(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    """The worker and its children in one process group (a terminal's Ctrl-Z, kill -SIG -PGID):
    the children ignore what is meant for the worker; the worker decides."""
    log = tmp_path / "w.log"
    signals_app.ledger.enqueue("g", 2.5)
    w = spawn_worker(redis_url, "--isolation", "process", app=APP, concurrency=1, log=log,
                     new_session=True)
    try:
        wait_until(lambda: len(_runs(r)) == 1, timeout=20, what="the job to start")
        for sig in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGUSR1, signal.SIGUSR2,
                    signal.SIGHUP, signal.SIGQUIT):
            os.killpg(w.pid, sig)
            wait_until(lambda s=sig: _log_has(log, f"got {s.name}"),  # type: ignore[misc]
                       what=f"the worker to log {sig.name}")
        wait_until(lambda: [ev for ev, _ in _ledger(r)][-1] == "end", what="the job to finish")
        (run,) = _runs(r)
        assert ("end", run) in _ledger(r)  # the same run, in the same child, to its end
        assert w.poll() is None
        os.killpg(w.pid, signal.SIGTERM)  # the children ignore it too: the worker stops them
        assert w.wait(15) == 0
    finally:
        stop_proc(w, timeout=1)
    assert r.get(keys.stat("processed")) == b"1" and r.zcard(keys.DEAD) == 0
