"""Processes on this machine, as /proc and waitpid see them.

1. `pid_alive(pid)`: alive until every thread of the process has exited (a killed
   multi-threaded server keeps its sockets until then); for our own children
   `waitpid` decides, for other processes /proc/PID/task.
2. `read_cmdline(pid)`: its command line, from any thread still running.
3. `tail_lines(path, n)`: the end of a log file.
4. `pdeathsig_preexec(sig)`: a preexec_fn so a child dies with the thread that
   started it (PR_SET_PDEATHSIG).
5. `CHILDREN`: the children this process spawned, so they can be reaped.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1

# Children spawned by this process, by pid: kept so they can be reaped (no
# zombies) and so Popen does not warn about running children it forgot.
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}




def tail_lines(path: Path, n: int = 40) -> list[str]:
    """The last `n` lines of a text file ([] if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            chunk = max(4096, n * 400)
            fh.seek(max(0, size - chunk))
            data = fh.read()
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if size > chunk and lines:
        lines = lines[1:]  # the first line is probably cut
    return lines[-n:] if n > 0 else []


def _thread_ids(pid: int) -> list[str]:
    """The thread ids of process `pid` ([] if it is gone), main thread first."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return []
    return sorted(tids, key=lambda t: t != str(pid))


def read_cmdline(pid: int) -> str | None:
    """/proc/PID/cmdline with spaces for NULs; None if no such live process.

    While a multi-threaded process dies, its main thread may already have
    exited (an empty cmdline) while other threads still run and still hold its
    files; their /proc/PID/task/TID/cmdline still shows the command line.
    """
    for tid in _thread_ids(pid):
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if raw:
            return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
    return None  # gone, a zombie, or a kernel thread


def _thread_state(pid: int, tid: str) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def pid_alive(pid: int) -> bool:
    """True until process `pid` has completely exited (reaping our own children).

    "Completely" matters: when a multi-threaded server (redis, mariadbd, the
    JVM) is killed, its main thread turns zombie first, while the other threads
    are still exiting and the process's files, such as its listening socket,
    are still open. /proc/PID/stat shows only the main thread, so it must not
    decide. For our own children waitpid() decides: it reports the child only
    once every thread is gone. For other processes: alive while any thread in
    /proc/PID/task is not a zombie.
    """
    child = CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        CHILDREN.pop(pid, None)
        return False
    return any(_thread_state(pid, tid) not in (None, "Z", "X") for tid in _thread_ids(pid))


def pdeathsig_preexec(sig: int) -> Callable[[], None]:
    """A preexec_fn setting PR_SET_PDEATHSIG; libc is resolved before the fork."""
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec
