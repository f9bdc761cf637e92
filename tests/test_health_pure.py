"""The probes' verdicts (tables) and sd_notify over a real unix datagram socket (no servers)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from podjobs import sdnotify
from podjobs.checks import NO_LEADER, NOT_OK, OK, scheduler_verdict, worker_verdict

W = [{"id": "h1:10:a", "host": "h1", "pid": 10, "alive": True},
     {"id": "h1:11:b", "host": "h1", "pid": 11, "alive": False},
     {"id": "h2:12:c", "host": "h2", "pid": 12, "alive": False}]


@pytest.mark.parametrize("host,pid,wid,code", [
    ("h1", None, None, OK),          # one live worker of the host is enough
    ("h1", 11, None, NOT_OK),        # that pid's heartbeat expired
    ("h1", 10, None, OK),
    ("h2", None, None, NOT_OK),      # registered, heartbeat gone
    ("h3", None, None, NOT_OK),      # none registered
    ("zz", None, "h1:10", OK),       # by id, whatever the host
    ("h1", None, "h2:12", NOT_OK),
])
def test_worker_verdict(host: str, pid: int | None, wid: str | None, code: int) -> None:
    v = worker_verdict(W, host, pid, wid)
    assert v.code == code, v.message
    assert v.as_dict()["ok"] is (code == OK)


LEADER = {"id": "h1:1", "host": "h1", "term": 7}
C = [{"id": "h1:1", "host": "h1"}, {"id": "h2:2", "host": "h2"}]


@pytest.mark.parametrize("contenders,leader,host,sid,require,code,state", [
    (C, LEADER, "h1", None, False, OK, "leader"),
    (C, LEADER, "h2", None, False, OK, "standby"),
    (C, LEADER, "h2", None, True, NO_LEADER, "standby"),
    (C, LEADER, "h1", None, True, OK, "leader"),
    (C, None, "h2", None, False, NO_LEADER, "standby"),
    (C, LEADER, "h3", None, False, NOT_OK, "absent"),
    (C, LEADER, "h3", "h2:2", False, OK, "standby"),
    ([], None, "h1", None, False, NOT_OK, "absent"),
])
def test_scheduler_verdict(contenders: list[dict[str, str]], leader: dict[str, object] | None,
                           host: str, sid: str | None, require: bool, code: int, state: str) -> None:
    v = scheduler_verdict(contenders, leader, host, sid, require)
    assert (v.code, v.detail["state"]) == (code, state), v.message


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10)
    yield s, {"NOTIFY_SOCKET": path}
    s.close()


def test_notify_sends_one_datagram_and_nothing_outside_systemd(
        listener: tuple[socket.socket, dict[str, str]]) -> None:
    s, env = listener
    assert sdnotify.notify("READY=1\nSTATUS=up", env)
    assert s.recv(4096) == b"READY=1\nSTATUS=up"
    assert not sdnotify.notify("READY=1", {})
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": env["NOTIFY_SOCKET"] + ".gone"})


def test_notify_never_waits_for_a_reader_that_does_not_read(
        listener: tuple[socket.socket, dict[str, str]]) -> None:
    """A socket nobody reads fills up; a blocking send then hung the worker's stop (its
    STOPPING=1) until it was killed: found by test_health's worker test taking 15 s."""
    import threading

    s, env = listener
    results: list[bool] = []

    def flood() -> None:
        for _ in range(5000):  # far more than a unix datagram queue holds
            results.append(sdnotify.notify("WATCHDOG=1", env))

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "notify blocked on a full socket"
    assert results[0] and not results[-1]  # sent while there was room, then dropped
    assert s.recv(64) == b"WATCHDOG=1"  # what was sent is there


def test_notify_to_an_abstract_socket() -> None:
    name = f"podjobs-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(10)
    try:
        assert sdnotify.notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert s.recv(64) == b"WATCHDOG=1"
    finally:
        s.close()


@pytest.mark.parametrize("env,interval", [
    ({}, None), ({"WATCHDOG_USEC": "4000000"}, 2.0), ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "x"}, None), ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}, None),
])
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert sdnotify.watchdog_interval(env) == interval


def test_pinger_sends_ready_when_healthy_then_watchdog_and_stopping(
        listener: tuple[socket.socket, dict[str, str]]) -> None:
    s, env = listener
    healthy = {"now": False}
    p = sdnotify.Pinger(lambda: healthy["now"], status="test",
                        env={**env, "WATCHDOG_USEC": "100000"}).start()
    try:
        healthy["now"] = True
        first = s.recv(4096).decode()
        assert first.startswith("READY=1\nSTATUS=test\nMAINPID=")
        assert s.recv(64) == b"WATCHDOG=1"
    finally:
        p.stop()
    while (msg := s.recv(64)) == b"WATCHDOG=1":  # those sent before the stop
        pass
    assert msg == b"STOPPING=1"
