"""Process isolation: each executor slot runs its jobs in a child process.

1. A child is started with the `spawn` method, imports the app modules, and
   runs jobs the parent sends over a pipe (JSON-safe values only).
2. The parent waits for the answer while watching the child: past the job's
   timeout, or above its memory limit (resident size read from /proc), the
   child is killed with SIGKILL and the job fails with that reason (and is
   retried); a child that dies by itself fails the job as a crash.
3. A child is recycled after `max_jobs` jobs, so slow leaks never pile up.
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
from multiprocessing.connection import Connection
from typing import Any

from podjobs.context import Context
from podjobs.invoke import Failure, Outcome, failed, invoke
from podjobs.jobs import JobDef, lookup
from podjobs.status import as_json_result

log = logging.getLogger("podjobs.isolation")
_PAGE = os.sysconf("SC_PAGE_SIZE")
#: how often the parent checks a running child's memory, in seconds
MEMORY_CHECK_S = 0.05


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return 0.0


def _child_main(conn: Connection, app_modules: Sequence[str], stop_seq: Any) -> None:
    stopping = threading.Event()
    current = [0]

    def on_term(_s: int, _f: Any) -> None:
        # the parent wrote the number of the job to stop into stop_seq, then signalled
        if stop_seq.value >= current[0]:
            stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for m in app_modules:
        importlib.import_module(m)
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
        out = invoke(jd, ctx, args, kwargs)
        result = as_json_result(out.result)  # a Created travels as {"location": ...}
        if not isinstance(result, str | int | float | bool | type(None) | dict | list):
            result = None
        conn.send(("ok" if out.ok else "err", out.failure.value if out.failure else "",
                   out.error_class, out.message, out.trace, result, out.delay, out.updates,
                   out.unfinished))


class Child:
    """One child process, reused for up to `max_jobs` jobs."""

    def __init__(self, app_modules: Sequence[str], max_jobs: int, max_memory_mb: float | None) -> None:
        self.app_modules = list(app_modules)
        self.max_jobs = max_jobs
        self.max_memory_mb = max_memory_mb
        self.proc: Any = None
        self.conn: Connection | None = None
        self.jobs = 0
        #: number of the job sent last, and the highest job number asked to stop
        self.seq = 0
        self.stop_seq: Any = None

    def _start(self) -> None:
        mp = multiprocessing.get_context("spawn")
        parent, child = mp.Pipe()
        self.stop_seq = mp.Value("q", 0, lock=False)
        self.seq = 0
        self.proc = mp.Process(target=_child_main, args=(child, self.app_modules, self.stop_seq),
                               name="podjobs-child", daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.jobs = 0

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

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(5)
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None

    def close(self) -> None:
        if self.conn is not None and self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(2)
            except OSError:
                pass
        self.kill()

    def run(self, jd: JobDef, ctx: Context, args: list[Any], kwargs: dict[str, Any]) -> Outcome:
        if self.proc is None or not self.proc.is_alive():
            self.kill()
            self._start()
        assert self.conn is not None
        fields = {"job_id": ctx.job_id, "job_name": ctx.job_name, "attempt": ctx.attempt,
                  "queue": ctx.queue, "enqueued_at_ms": ctx.enqueued_at_ms, "tenant": ctx.tenant,
                  "pod": ctx.pod, "worker_id": ctx.worker_id, "payload": ctx.payload,
                  "shard_url": ctx.shard_url, "redis_url": ctx.redis_url,
                  "tenant_version": ctx.tenant_version}
        self.seq += 1
        fields["seq"] = self.seq
        if ctx.stopping.is_set():
            self.stop_seq.value = self.seq
        self.conn.send((jd.name, fields, args, kwargs))
        limit_mb = jd.options.max_memory_mb or self.max_memory_mb
        timeout = jd.options.timeout
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            wait = MEMORY_CHECK_S if limit_mb else 1.0
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            try:
                ready = self.conn.poll(wait)
            except (EOFError, OSError):
                ready = False
            if ready:
                try:
                    msg = self.conn.recv()
                except (EOFError, OSError):
                    return self._crashed(jd)
                break
            if not self.proc.is_alive():
                return self._crashed(jd)
            if limit_mb and (rss := rss_mb(self.proc.pid)) > limit_mb:
                self.kill()
                return failed(Failure.MEMORY, "MemoryLimit",
                              f"child process used {rss:.0f} MiB, over the limit of {limit_mb:.0f} MiB; killed")
            if deadline is not None and time.monotonic() >= deadline:
                self.kill()
                return failed(Failure.TIMEOUT, "JobTimeout",
                              f"job ran past its timeout of {timeout} s; child process killed")
        self.jobs += 1
        if self.jobs >= self.max_jobs:
            self.close()
        if msg[0] == "ok":
            return Outcome(True, msg[5], unfinished=msg[8])
        out = failed(Failure(msg[1]) if msg[1] else Failure.ERROR, msg[2], msg[3], msg[4])
        out.delay, out.updates = msg[6], msg[7]
        return out

    def _crashed(self, jd: JobDef) -> Outcome:
        code = self.proc.exitcode if self.proc is not None else None
        self.kill()
        return failed(Failure.CRASH, "ChildCrashed",
                      f"child process running {jd.name} died (exit code {code})")
