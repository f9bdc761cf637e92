"""`podjobs worker --processes N` (podjobs.supervisor): N worker processes under one command,
on a real Redis with real processes: every slot runs a registered worker, a worker killed
with SIGKILL is replaced (and its jobs recovered as any dead worker's), SIGTERM stops them
all gracefully (a running job finishes), a worker that fails on its configuration stops
the whole command with exit 2 instead of looping. The decisions are tested from tables."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import podjobs
from podjobs.backend import RedisBackend
from podjobs.errors import ConfigurationError
from podjobs.ops import Inspector
from podjobs.supervisor import (
    HEALTHY_S,
    RESTART_MAX_S,
    RESTART_MIN_S,
    parse_processes,
    restart_delay,
)
from tests.apps import core_app
from tests.helpers import spawn_worker, stop_proc, wait_until


@pytest.mark.parametrize(("value", "want"), [
    (None, 1), ("1", 1), ("3", 3), (2, 2), ("auto", max(1, os.cpu_count() or 1)), (" AUTO ", None),
])
def test_parse_processes(value: str | int | None, want: int | None) -> None:
    if want is None:
        want = max(1, os.cpu_count() or 1)
    assert parse_processes(value) == want


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", ""])
def test_parse_processes_refuses_what_is_not_a_count(value: str) -> None:
    with pytest.raises(ConfigurationError, match=f"--processes {value!r}"):
        parse_processes(value)


@pytest.mark.parametrize(("lived", "previous", "want"), [
    (0.5, None, RESTART_MIN_S),             # the first exit of a slot
    (0.5, RESTART_MIN_S, 2 * RESTART_MIN_S),  # dies again at once: doubled
    (0.5, 16.0, RESTART_MAX_S),             # never above the ceiling
    (0.5, RESTART_MAX_S, RESTART_MAX_S),
    (HEALTHY_S, 16.0, RESTART_MIN_S),       # ran long enough: back to the start
])
def test_restart_delay(lived: float, previous: float | None, want: float) -> None:
    assert restart_delay(lived, previous) == want


@pytest.fixture
def r(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    podjobs.configure(redis_url)
    monkeypatch.setenv("PODJOBS_RECORD_URL", redis_url)
    yield redis.Redis.from_url(redis_url)


def _alive_workers(url: str) -> dict[int, str]:
    return {w.pid: w.id for w in Inspector(RedisBackend(url)).workers() if w.alive}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not reaped yet) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_processes_run_replace_a_killed_worker_and_stop_on_sigterm(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    sup = spawn_worker(redis_url, "--processes", "2", log=log, new_session=True)
    try:
        workers = wait_until(lambda: len(w := _alive_workers(redis_url)) == 2 and w, 30,
                             "two worker processes registered")
        assert sup.pid not in workers  # the supervisor runs no worker itself
        for i in range(40):
            core_app.record.enqueue(f"j{i}")
        wait_until(lambda: r.llen("rec:done") == 40, 30, "every job done")
        assert sorted(r.lrange("rec:done", 0, -1)) == sorted(f"j{i}".encode() for i in range(40))

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        after = wait_until(lambda: len(w := _alive_workers(redis_url)) >= 2
                           and victim not in w and w, 30, "a worker started in the killed one's slot")
        assert len(set(after) - set(workers)) == 1

        core_app.record.enqueue("slow", sleep=1.0)
        wait_until(lambda: b"slow" in r.lrange("rec:started", 0, -1), 30, "the slow job started")
        assert stop_proc(sup, signal.SIGTERM, timeout=40) == 0
        assert b"slow" in r.lrange("rec:done", 0, -1)  # finished, not cut off by the stop
        for pid in after:
            assert not _pid_alive(pid), f"worker process {pid} outlived its supervisor"
    finally:
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGKILL)
    text = log.read_text()
    assert "exited with -9" in text and "starting another" in text


def test_a_worker_that_fails_on_its_configuration_stops_the_command(
        redis_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    # a worker cannot serve --isolation sideways: each process exits 2 at start
    sup = spawn_worker(redis_url, "--processes", "2", "--isolation", "sideways", log=log,
                       new_session=True)
    try:
        assert sup.wait(60) == 2
    except subprocess.TimeoutExpired:
        os.killpg(sup.pid, signal.SIGKILL)
        raise
    assert "usage or configuration" in log.read_text()


def test_the_workers_stop_when_the_supervisor_is_killed(redis_url: str, tmp_path: Path) -> None:
    sup = spawn_worker(redis_url, "--processes", "2", log=tmp_path / "worker.log",
                       new_session=True)
    workers = wait_until(lambda: len(w := _alive_workers(redis_url)) == 2 and w, 30,
                         "two worker processes registered")
    os.kill(sup.pid, signal.SIGKILL)
    sup.wait(10)
    # PR_SET_PDEATHSIG: each gets SIGTERM and stops gracefully (unregisters)
    wait_until(lambda: not any(_pid_alive(p) for p in workers), 30,
               "the workers of a SIGKILLed supervisor to exit")
    wait_until(lambda: not _alive_workers(redis_url), 10, "the workers to unregister")
