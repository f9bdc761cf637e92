"""What a worker process does on each signal, and the exit it guarantees after SIGTERM.

| signal | worker | process-isolation child |
|---|---|---|
| TERM, INT | graceful stop: stop fetching, give unstarted jobs back, running jobs get `shutdown_timeout` s, then their children are stopped and the jobs given back; exit 0 | ignored (the worker stops it: TERM, then KILL) |
| TSTP, USR1 | quiet: stop fetching, give unstarted jobs back, finish running ones, stay up until TERM | ignored |
| TTIN, QUIT | dump every thread's stack and the running jobs to the log | ignored |
| HUP, USR2 | logged, otherwise ignored (no reload: restart the worker for new code) | ignored |
| CONT | logged (the process goes on, as always) | default |
| TTOU | ignored (a background worker writing to a terminal is never stopped) | ignored |

1. `SignalDispatch` installs handlers that only put the signal number into a queue (safe in
   a handler: `SimpleQueue.put` is reentrant); a daemon thread takes them out and calls the
   worker's action for each, so a dump or a quiet never runs inside a signal handler.
2. `CHILD_IGNORED`: the signals a child ignores, so one sent to the whole process group
   (a terminal's Ctrl-Z or Ctrl-C, `kill -SIG -PGID`, systemd's control-group TERM) reaches
   only the worker, which decides; the worker blocks them while it starts a child.
3. `ExitGuard`: armed when a graceful stop begins; if the process is still alive
   `seconds` later (a stop or an interpreter exit that hangs), it exits at once
   (`os._exit`: 0 when the stop had completed, 1 when it had not).
4. `dump(...)`: the text of a TTIN/QUIT dump.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping

log = logging.getLogger("podjobs.worker")

STOP = (signal.SIGTERM, signal.SIGINT)
QUIET = (signal.SIGTSTP, signal.SIGUSR1)
DUMP = (signal.SIGTTIN, signal.SIGQUIT)
LOGGED = (signal.SIGHUP, signal.SIGUSR2, signal.SIGCONT)
IGNORED = (signal.SIGTTOU,)
#: ignored by process-isolation children (SIGTERM has a handler there that ignores it
#: unless the worker asked; see podjobs.isolation)
CHILD_IGNORED = (signal.SIGINT, *QUIET, *DUMP, signal.SIGHUP, signal.SIGUSR2, *IGNORED)

#: seconds between SIGTERM and SIGKILL for a child still running a job at the shutdown deadline
CHILD_STOP_GRACE_S = 2.0
#: seconds past the shutdown deadline and the children's grace after which a worker that
#: has not exited yet is made to
EXIT_MARGIN_S = 2.5

class SignalDispatch:
    """Calls `on_stop`, `on_quiet` or `on_dump` (in a thread of its own, never inside the
    signal handler) for the signals of the table above."""

    def __init__(self, name: str, *, on_stop: Callable[[], None], on_quiet: Callable[[], None],
                 on_dump: Callable[[], None]) -> None:
        self.name = name
        self.on_stop = on_stop
        self.on_quiet = on_quiet
        self.on_dump = on_dump
        self._q: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="podjobs-signals", daemon=True)

    def install(self) -> None:
        """Install the handlers (from the main thread) and start the dispatch thread."""
        for sig in (*STOP, *QUIET, *DUMP, *LOGGED):
            signal.signal(sig, self._handler)
        for sig in IGNORED:
            signal.signal(sig, signal.SIG_IGN)
        self._thread.start()

    def _handler(self, signum: int, _frame: object) -> None:
        self._q.put(signum)

    def _loop(self) -> None:
        while True:
            signum = self._q.get()
            try:
                self._act(signum)
            except Exception:  # a failed dump or quiet must not end signal handling
                log.exception("worker %s: handling signal %s failed", self.name, signum)

    def _act(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum in STOP:
            log.info("worker %s got %s: %s", self.name, name,
                     "already shutting down" if self._stopping else "shutting down")
            self._stopping = True
            self.on_stop()
        elif signum in QUIET:
            log.info("worker %s got %s: going quiet (no new jobs; running ones finish; "
                     "SIGTERM stops it)", self.name, name)
            self.on_quiet()
        elif signum in DUMP:
            log.info("worker %s got %s: dumping threads and running jobs", self.name, name)
            self.on_dump()
        else:
            log.info("worker %s got %s: ignored (the worker goes on; SIGTERM stops it)",
                     self.name, name)


class ExitGuard:
    """Exits the process `seconds` after it is armed unless the process ended before."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.seconds = seconds
        self.stop_done = False
        self._thread = threading.Thread(target=self._run, name="podjobs-exit-guard", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        time.sleep(self.seconds)
        code = 0 if self.stop_done else 1
        log.error("worker %s still alive %.1f s after its stop began (%s); exiting now with %d",
                  self.name, self.seconds,
                  "the stop completed, the exit hung" if self.stop_done else "the stop hung", code)
        for h in logging.getLogger().handlers:
            try:
                h.flush()
            except Exception:
                pass
        os._exit(code)


def dump(name: str, running: Mapping[int, tuple[str, str, str, float]],
         children: Mapping[int, tuple[int, str]]) -> str:
    """Every thread's stack, and the jobs running (`running`: thread id -> job id, job name,
    queue, start time; `children`: thread id -> its process-isolation child's pid and the
    name of the job it runs)."""
    now = time.time()
    names = {t.ident: t.name for t in threading.enumerate()}
    lines = [f"worker {name}: {len(running)} running jobs"]
    for tid, (jid, job, q, started) in sorted(running.items(), key=lambda kv: kv[1][3]):
        pid, child_job = children.get(tid, (0, ""))
        child = f", in child process {pid}" if pid else ""
        lines.append(f"  job {jid} {job or child_job or '?'} from {q}, running "
                     f"{now - started:.1f} s, thread {names.get(tid, tid)}{child}")
    for tid, frame in sys._current_frames().items():
        lines.append(f"thread {names.get(tid, '?')} ({tid}):")
        lines.extend("  " + ln for chunk in traceback.format_stack(frame)
                     for ln in chunk.rstrip("\n").split("\n"))
    return "\n".join(lines)
