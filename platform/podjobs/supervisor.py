"""`podjobs worker --processes N`: N worker processes under one command.

Python runs one thread at a time per process, so one worker process uses at most one core;
Dramatiq and Celery prefork start a process per core by default. With `--processes N` (or
`auto`: one per core) the command becomes a supervisor that imports no app and opens no
connection: it starts N copies of the same worker command, each a process of its own with
`PODJOBS_WORKER_SLOT` = 0..N-1 in its environment (its worker id, heartbeat and in-flight
jobs are its own, as with N separate commands; `--metrics-port P` becomes P + slot), and:

| event | the supervisor |
|---|---|
| TERM, INT | TERM to every worker (each stops gracefully within its `--shutdown-timeout`), waits for them, exits 0 when each stopped with 0 (or by the TERM itself, before it had started), else 1; a worker alive `stop_wait` s later is killed |
| TSTP, USR1, TTIN, QUIT, HUP, USR2 | the same signal to every worker (quiet, dump, logged: podjobs.signals) |
| a worker exits while not stopping | logged, and a new one started in its slot after `restart_delay` (1 s, doubled while workers die within HEALTHY_S of their start, at most 30 s) |
| a worker exits with 2 (usage or configuration) | every worker stopped, exit 2: starting it again would fail the same way |

The workers are in a process group of their own (a terminal's Ctrl-C or Ctrl-Z reaches the
supervisor only, which passes it on once) and die with it (PR_SET_PDEATHSIG: TERM, so even
a SIGKILLed supervisor's workers stop gracefully). Under systemd the supervisor sends READY
once every slot has a process and WATCHDOG while they all live; the workers do not notify.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from podjobs.errors import ConfigurationError
from podjobs.signals import DUMP, IGNORED, QUIET, STOP

log = logging.getLogger("podjobs.supervisor")

#: the environment variable that makes a worker command a supervised worker (its slot)
ENV_SLOT = "PODJOBS_WORKER_SLOT"
#: a worker that lived this long before it exited is started again after RESTART_MIN_S
HEALTHY_S = 30.0
RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0
#: exit code of a worker that will fail the same way when started again (usage, config)
NO_RESTART = 2
_PASSED_ON = (*QUIET, *DUMP, signal.SIGHUP, signal.SIGUSR2)
_NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def parse_processes(value: str | int | None) -> int:
    """`--processes`: a whole number of 1 or more, or "auto" (one per core)."""
    if value is None:
        return 1
    if isinstance(value, str) and value.strip().lower() == "auto":
        return max(1, os.cpu_count() or 1)
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ConfigurationError(f"--processes {value!r}: give a whole number of worker "
                                 f"processes (1 or more) or 'auto' for one per core")
    return n


def restart_delay(lived_s: float, previous: float | None) -> float:
    """Seconds before a worker that exited after `lived_s` is started again: RESTART_MIN_S
    after a healthy run, else twice the previous delay, at most RESTART_MAX_S."""
    if previous is None or lived_s >= HEALTHY_S:
        return RESTART_MIN_S
    return min(RESTART_MAX_S, previous * 2)


def _pdeathsig() -> Callable[[], None] | None:
    """What a new worker runs before its exec to get SIGTERM when the supervisor dies
    (Linux PR_SET_PDEATHSIG), resolved here in the supervisor: the child between fork and
    exec must not import (another thread of the supervisor may hold the import lock)."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None

    def set_it() -> None:  # pragma: no cover - runs in the child
        prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG

    return set_it


class _Slot:
    __slots__ = ("index", "proc", "started", "delay", "restart_at")

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.delay: float | None = None
        self.restart_at: float | None = None


class Supervisor:
    """Runs `command` (an argv) `processes` times, as the module docstring says."""

    def __init__(self, command: Sequence[str], processes: int, *, stop_wait: float,
                 env: Mapping[str, str] | None = None) -> None:
        self.command = list(command)
        self.slots = [_Slot(i) for i in range(processes)]
        self.stop_wait = stop_wait
        self.env = {k: v for k, v in (os.environ if env is None else env).items()
                    if k not in _NOTIFY_ENV}
        self._pre_exec = _pdeathsig()
        self._events: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._stopping = False
        self._failed = False
        self._exit = 0

    # -- processes ---------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        env = dict(self.env, **{ENV_SLOT: str(slot.index)})
        slot.proc = subprocess.Popen(self.command, env=env, process_group=0,
                                     preexec_fn=self._pre_exec)
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("worker process %d started in slot %d", slot.proc.pid, slot.index)

    def _send(self, signum: int) -> None:
        for s in self.slots:
            if s.proc is not None and s.proc.poll() is None:
                try:
                    os.kill(s.proc.pid, signum)
                except ProcessLookupError:
                    pass

    def _reap(self) -> None:
        now = time.monotonic()
        for s in self.slots:
            if s.proc is None or s.proc.poll() is None:
                continue
            code, pid = s.proc.returncode, s.proc.pid
            s.proc = None
            if self._stopping:
                # the stop's outcome (an earlier exit was restarted, and logged); a worker
                # that got the TERM before its handlers were in place (still importing, no
                # job yet) ended by it, which is as clean as systemd counts it
                if code not in (0, -signal.SIGTERM):
                    self._exit = 1
                continue
            if code == NO_RESTART:
                log.error("worker process %d (slot %d) exited with %d (usage or configuration):"
                          " stopping every worker; fix the command and start it again",
                          pid, s.index, code)
                self._failed = True
                self._stop()
                continue
            s.delay = restart_delay(now - s.started, s.delay)
            s.restart_at = now + s.delay
            log.warning("worker process %d (slot %d) exited with %s after %.1f s; starting "
                        "another in %.0f s", pid, s.index, code, now - s.started, s.delay)

    def _stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            self._send(signal.SIGTERM)

    def healthy(self) -> bool:
        return all(s.proc is not None and s.proc.poll() is None for s in self.slots)

    # -- the loop ------------------------------------------------------------------------

    def _handler(self, signum: int, _frame: object) -> None:
        self._events.put(signum)

    def run(self, on_started: Callable[[], object] | None = None) -> int:
        """Start the workers and supervise them until a stop; the exit code (module doc)."""
        for sig in (*STOP, *_PASSED_ON, signal.SIGCHLD, signal.SIGCONT):
            signal.signal(sig, self._handler)
        for sig in IGNORED:
            signal.signal(sig, signal.SIG_IGN)
        for s in self.slots:
            self._start(s)
        if on_started is not None:
            on_started()
        deadline: float | None = None
        while True:
            self._reap()
            now = time.monotonic()
            if self._stopping:
                if all(s.proc is None for s in self.slots):
                    break
                if deadline is None:
                    deadline = now + self.stop_wait
                elif now >= deadline:
                    log.error("worker processes still alive %.0f s after the stop; killing them",
                              self.stop_wait)
                    self._send(signal.SIGKILL)
                    self._exit = 1
                    deadline = now + 5.0
            else:
                for s in self.slots:
                    if s.proc is None and s.restart_at is not None and now >= s.restart_at:
                        self._start(s)
            waits = [s.restart_at - now for s in self.slots
                     if s.proc is None and s.restart_at is not None and not self._stopping]
            if deadline is not None:
                waits.append(deadline - now)
            try:
                signum = self._events.get(timeout=max(0.05, min(waits, default=1.0)))
            except queue.Empty:
                continue
            if signum in STOP:
                log.info("supervisor got %s: stopping %d worker processes",
                         signal.Signals(signum).name, len(self.slots))
                self._stop()
            elif signum in _PASSED_ON:
                self._send(signum)
        if self._failed:
            return NO_RESTART
        return self._exit


def worker_command(argv: Sequence[str]) -> list[str]:
    """The argv that runs this same `podjobs` command line again in a new process."""
    return [sys.executable, "-m", "podjobs.cli", *argv]
