"""The faults themselves, on processes this suite started (by pid, never by name).

- `kill9(proc)`, `pause(proc)` / `resume(proc)`: SIGKILL, SIGSTOP, SIGCONT; each returns
  `time.monotonic()` of the signal.
- `sigterm_exit(proc, limit)`: SIGTERM, then wait for the exit; returns the seconds it
  took, or, when the process is still alive at `limit` + 5 s, kills it and returns that
  wait (so the report shows a slow exit instead of hanging).
- `PodRedis`: a private redis-server (optionally with appendonly yes / appendfsync
  always) that can be killed with SIGKILL and restarted on the same port and data dir.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from podjobs.infra.ports import free_port, wait_port_closed
from podjobs.infra.servers import RedisServer


def kill9(proc: subprocess.Popen[bytes]) -> float:
    t = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return t


def pause(proc: subprocess.Popen[bytes] | int) -> float:
    os.kill(proc if isinstance(proc, int) else proc.pid, signal.SIGSTOP)
    return time.monotonic()


def resume(proc: subprocess.Popen[bytes] | int) -> float:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc if isinstance(proc, int) else proc.pid, signal.SIGCONT)
    return time.monotonic()


def sigterm_exit(proc: subprocess.Popen[bytes], limit: float) -> float:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(limit + 1)
    except subprocess.TimeoutExpired:
        waited = time.monotonic() - t0
        kill9(proc)
        return waited
    return time.monotonic() - t0


class AofRedis(RedisServer):
    """redis-server with every write fsynced to its append-only file before the reply."""

    def command(self) -> list[str]:
        argv = super().command()
        i = argv.index("--appendonly")
        argv[i + 1] = "yes"
        return [*argv, "--appendfsync", "always"]


class PodRedis:
    """A private pod Redis in `base` (its own port, data dir and pid file)."""

    def __init__(self, base: Path, aof: bool = False) -> None:
        cls = AofRedis if aof else RedisServer
        self.server = cls.in_dir(base, free_port(), name="chaos", die_with_parent=True)
        self.server.start()
        self.server.wait_ready(20)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.address

    @property
    def pid(self) -> int | None:
        return self.server.pid

    def kill9(self) -> float:
        pid = self.server.pid
        t = time.monotonic()
        if pid is not None and self.server.owns(pid):
            os.kill(pid, signal.SIGKILL)
            self.server._wait_gone(pid, 10)
        wait_port_closed(self.port, 5)
        return t

    def restart(self) -> float:
        self.server.start()
        self.server.wait_ready(20)
        return time.monotonic()

    def close(self) -> None:
        pid = self.server.pid
        if pid is not None:
            resume(pid)
        self.server.stop(5)
