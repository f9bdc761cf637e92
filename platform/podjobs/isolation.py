"""Process isolation: each executor slot runs its jobs in a child process.

1. A child is started with the `spawn` method as soon as its executor slot starts (and
   again at once when it is recycled or killed), imports the app modules, says "ready",
   and runs jobs the parent sends over a pipe (JSON-safe values only). Its executor thread
   takes no job from the inbox until its child is ready (`wait_ready`), so a job never
   waits for a child's start-up while another child is idle. The child tells the parent
   when a job begins ("started"): the job's timeout counts from there, not from the
   child's start-up.
2. The parent waits for the answer while watching the child: past the job's
   timeout, or above its memory limit (resident size read from /proc), the
   child is killed with SIGKILL and the job fails with that reason (and is
   retried); a child that dies by itself fails the job as a crash.
3. A child is recycled after `max_jobs` jobs, so slow leaks never pile up.
4. Signals: a child ignores those meant for the worker (`podjobs.signals.CHILD_IGNORED`,
   also when they are sent to the whole process group); SIGTERM only sets the job's
   `ctx.stopping` when the parent asked for it (`interrupt`), and ends the child when the
   parent stops it at the worker's shutdown deadline (`stop_children`: TERM, then KILL
   after a grace); the job then goes back to its queue (`ChildStopped`), never settled.
   A child dies with its worker (PR_SET_PDEATHSIG), also when the worker is SIGKILLed.
The worker survives all of these.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from typing import Any

from podjobs.context import Context
from podjobs.invoke import Failure, Outcome, failed, invoke
from podjobs.jobs import JobDef, lookup
from podjobs.signals import CHILD_IGNORED
from podjobs.status import as_json_result

log = logging.getLogger("podjobs.isolation")
_PAGE = os.sysconf("SC_PAGE_SIZE")
#: how often the parent checks a running child's memory, in seconds
MEMORY_CHECK_S = 0.05
#: seconds a child may take to import the app and begin a job before it counts as crashed
START_TIMEOUT_S = 120.0
#: blocked while a child starts, so that none of them kills it before its handlers are set
_CHILD_BLOCKED = {signal.SIGTERM, *CHILD_IGNORED}


class ChildStopped(Exception):
    """The worker stopped this child at its shutdown deadline: the job is given back to its
    queue by the worker's stop, not settled."""


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return 0.0


def _die_with_worker() -> None:
    """Linux: SIGKILL this child when the worker thread that started it ends, so that a
    worker killed with SIGKILL (or made to exit) leaves no job running here while its jobs
    are handed to other workers."""
    parent = multiprocessing.parent_process()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)  # the worker died before the line above


def _child_main(conn: Connection, app_modules: Sequence[str], stop_seq: Any, quit_flag: Any) -> None:
    stopping = threading.Event()
    current = [0]

    def on_term(_s: int, _f: Any) -> None:
        if quit_flag.value:  # the worker's shutdown deadline: unwind the job and exit
            raise SystemExit(0)
        # the parent wrote the number of the job to stop into stop_seq, then signalled;
        # a SIGTERM it did not send (to the process group) changes nothing
        if stop_seq.value >= current[0]:
            stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    for sig in CHILD_IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    _die_with_worker()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _CHILD_BLOCKED)
    for m in app_modules:
        importlib.import_module(m)
    conn.send(("ready",))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        name, fields, args, kwargs = msg
        try:
            jd = lookup(name)
        except Exception as exc:  # the parent found it, so this is a deploy mismatch
            conn.send(("err", "crash", type(exc).__name__, str(exc), "", None, 0.0, None, ""))
            continue
        current[0] = int(fields.pop("seq"))
        stopping.clear()  # a stop meant for an earlier job (one tenant's move) is over
        if stop_seq.value >= current[0]:
            stopping.set()  # asked to stop before it even started
        ctx = Context(**fields, stopping=stopping)
        conn.send(("started",))  # the job's timeout counts from here
        out = invoke(jd, ctx, args, kwargs)
        result = as_json_result(out.result)  # a Created travels as {"location": ...}
        if not isinstance(result, str | int | float | bool | type(None) | dict | list):
            result = None
        conn.send(("ok" if out.ok else "err", out.failure.value if out.failure else "",
                   out.error_class, out.message, out.trace, result, out.delay, out.updates,
                   out.unfinished))


class Child:
    """One child process, reused for up to `max_jobs` jobs, replaced at once when it ends
    (unless `stopping` is set: the worker is shutting down)."""

    def __init__(self, app_modules: Sequence[str], max_jobs: int, max_memory_mb: float | None,
                 stopping: threading.Event | None = None) -> None:
        self.app_modules = list(app_modules)
        self.max_jobs = max_jobs
        self.max_memory_mb = max_memory_mb
        self.stopping = stopping if stopping is not None else threading.Event()
        #: the executor thread that owns this child (for dumps)
        self.owner = threading.get_ident()
        self.proc: Any = None
        self.conn: Connection | None = None
        self.jobs = 0
        #: number of the job sent last, and the highest job number asked to stop
        self.seq = 0
        self.stop_seq: Any = None
        #: set by `begin_stop`: the child is to exit (SIGTERM ends it)
        self.quit_flag: Any = None
        #: stopped by `stop_children`: no job runs here any more
        self.stopped = False
        #: name of the job running now ("" when idle)
        self.job = ""
        #: the running child said "ready" (its app modules are imported)
        self.ready = False

    @property
    def pid(self) -> int:
        proc = self.proc
        return int(proc.pid) if proc is not None and proc.pid is not None else 0

    def start(self) -> None:
        """Start the child process; it imports the app modules while the caller goes on."""
        mp = multiprocessing.get_context("spawn")
        parent, child = mp.Pipe()
        self.stop_seq = mp.Value("q", 0, lock=False)
        self.quit_flag = mp.Value("b", 0, lock=False)
        self.seq = 0
        self.proc = mp.Process(target=_child_main,
                               args=(child, self.app_modules, self.stop_seq, self.quit_flag),
                               name="podjobs-child", daemon=True)
        # the child inherits the mask: signals sent before it set its handlers wait for them.
        # So does multiprocessing's resource tracker, started on the first call; it then
        # unblocks SIGTERM and SIGINT in this thread (it ignores them itself): block again
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _CHILD_BLOCKED)
        try:
            resource_tracker.ensure_running()
            signal.pthread_sigmask(signal.SIG_BLOCK, _CHILD_BLOCKED)
            self.proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child.close()
        self.conn = parent
        self.jobs = 0
        self.ready = False

    def wait_ready(self, stop: threading.Event, timeout: float = START_TIMEOUT_S) -> bool:
        """Wait until the child has imported the app (it said "ready"), it died, `stop` is
        set or `timeout` passed; True when it is ready. A child that is not ready is
        dealt with by `run` as before (started again, or the job fails as a crash)."""
        end = time.monotonic() + timeout
        while not self.ready and not stop.is_set() and time.monotonic() < end:
            conn, proc = self.conn, self.proc
            if conn is None or proc is None or not proc.is_alive():
                return False
            try:
                if conn.poll(0.1):
                    msg = conn.recv()
                    if msg and msg[0] == "ready":
                        self.ready = True
            except (EOFError, OSError):
                return False
        return self.ready

    def warm(self) -> None:
        """Start the child now unless one runs or the worker stops (the next job retries)."""
        if self.stopped or self.stopping.is_set():
            return
        if self.proc is not None and self.proc.is_alive():
            return
        try:
            self.kill()
            self.start()
        except Exception as exc:
            log.warning("could not start a child process (%s: %s); the next job tries again",
                        type(exc).__name__, exc)
            self.kill()

    def interrupt(self) -> None:
        """Tell the job the child runs (or is about to) to stop: ctx.stopping there."""
        proc = self.proc
        if proc is not None and self.stop_seq is not None:
            self.stop_seq.value = self.seq
        if proc is not None and proc.is_alive():
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def begin_stop(self) -> Any:
        """The worker's shutdown deadline: no more jobs here; SIGTERM makes the child exit
        (its job unwinds). Returns the process to wait for, or None."""
        self.stopped = True
        proc = self.proc
        if proc is None or not proc.is_alive():
            return None
        if self.quit_flag is not None:
            self.quit_flag.value = 1
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        return proc

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(5)
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None
        self.ready = False

    def close(self) -> None:
        if self.conn is not None and self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(2)
            except OSError:
                pass
        self.kill()

    def run(self, jd: JobDef, ctx: Context, args: list[Any], kwargs: dict[str, Any]) -> Outcome:
        if self.stopped:
            raise ChildStopped(f"the worker is stopping; {jd.name} {ctx.job_id} goes back to its queue")
        if self.proc is None or not self.proc.is_alive():
            self.kill()
            self.start()
        assert self.conn is not None
        fields = {"job_id": ctx.job_id, "job_name": ctx.job_name, "attempt": ctx.attempt,
                  "queue": ctx.queue, "enqueued_at_ms": ctx.enqueued_at_ms, "tenant": ctx.tenant,
                  "pod": ctx.pod, "worker_id": ctx.worker_id, "payload": ctx.payload,
                  "shard_url": ctx.shard_url, "redis_url": ctx.redis_url,
                  "tenant_version": ctx.tenant_version, "claimed_at": ctx.claimed_at}
        self.seq += 1
        fields["seq"] = self.seq
        if ctx.stopping.is_set():
            self.stop_seq.value = self.seq
        self.job = jd.name
        try:
            try:
                self.conn.send((jd.name, fields, args, kwargs))
            except OSError:
                out, answered = self._crashed(jd), False
            else:
                out, answered = self._wait(jd)
        finally:
            self.job = ""
        if answered:
            self.jobs += 1
            if self.jobs >= self.max_jobs:
                self.close()
        self.warm()  # a child recycled or killed is replaced now, not on the next job
        return out

    def _wait(self, jd: JobDef) -> tuple[Outcome, bool]:
        """The job's outcome, and whether the child answered (False: it was killed or died)."""
        assert self.conn is not None
        limit_mb = jd.options.max_memory_mb or self.max_memory_mb
        timeout = jd.options.timeout
        start_by = time.monotonic() + START_TIMEOUT_S
        deadline: float | None = None  # set when the job begins in the child
        while True:
            wait = MEMORY_CHECK_S if limit_mb else 1.0
            wait = min(wait, max(0.0, (deadline if deadline is not None else start_by)
                                 - time.monotonic()))
            try:
                ready = self.conn.poll(wait)
            except (EOFError, OSError):
                ready = False
            if ready:
                try:
                    msg = self.conn.recv()
                except (EOFError, OSError):
                    return self._crashed(jd), False
                if msg[0] == "ready":  # sent once after the imports, before any job
                    self.ready = True
                    continue
                if msg[0] == "started":
                    start_by = float("inf")
                    if timeout:
                        deadline = time.monotonic() + timeout
                    continue
                return self._outcome(msg), True
            if not self.proc.is_alive():
                return self._crashed(jd), False
            if limit_mb and (rss := rss_mb(self.proc.pid)) > limit_mb:
                self.kill()
                return failed(Failure.MEMORY, "MemoryLimit",
                              f"child process used {rss:.0f} MiB, over the limit of {limit_mb:.0f} MiB; killed"), False
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self.kill()
                return failed(Failure.TIMEOUT, "JobTimeout",
                              f"job ran past its timeout of {timeout} s; child process killed"), False
            if now >= start_by:
                self.kill()
                return failed(Failure.CRASH, "ChildStartTimeout",
                              f"the child process did not begin {jd.name} within "
                              f"{START_TIMEOUT_S:.0f} s (is importing the app modules stuck?); killed"), False

    @staticmethod
    def _outcome(msg: tuple[Any, ...]) -> Outcome:
        if msg[0] == "ok":
            return Outcome(True, msg[5], unfinished=msg[8])
        out = failed(Failure(msg[1]) if msg[1] else Failure.ERROR, msg[2], msg[3], msg[4])
        out.delay, out.updates = msg[6], msg[7]
        return out

    def _crashed(self, jd: JobDef) -> Outcome:
        code = self.proc.exitcode if self.proc is not None else None
        self.kill()
        if self.stopped:
            raise ChildStopped(f"the worker stopped the child running {jd.name} at its shutdown "
                               f"deadline; the job goes back to its queue")
        return failed(Failure.CRASH, "ChildCrashed",
                      f"child process running {jd.name} died (exit code {code})")


def stop_children(children: Sequence[Child], grace: float) -> int:
    """The worker's shutdown deadline: make every child still alive exit (SIGTERM: its job
    unwinds), SIGKILL those alive `grace` seconds later, and wait until all are gone, so that
    the jobs given back next never run twice at once. Returns how many were alive."""
    procs = [p for p in (c.begin_stop() for c in children) if p is not None]
    end = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    for p in procs:
        if p.is_alive():
            log.warning("child process %d did not exit %.1f s after SIGTERM; killing it", p.pid, grace)
            p.kill()
    for p in procs:
        p.join(5)
    return len(procs)
