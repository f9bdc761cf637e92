"""The two in-process modes of the testing kit: `inline` and `fake` (no Redis).

Both swap the process-wide client (`podjobs.configure`) for one on a `MemoryBackend`, so
`job.enqueue(...)`, `podjobs.enqueue(...)`, follow-ups and bulk enqueues go to memory, and
run jobs with the worker's own executor and middleware chain (retries, follow-ups, unique
keys, the app's middleware, iteration), each job in the calling thread:

- `inline()`: every enqueue runs the job at once, with whatever it enqueues in turn, and
  its retries without waiting for the backoff; a job that ends dead raises `JobFailed`
  (`raise_dead=False` keeps it in `dead` instead).
- `fake()`: enqueues are captured; `assert_enqueued(job, args, tenant=...)` checks them,
  `drain()` runs everything waiting (and what that enqueues) until nothing waits.

Iteration jobs keep their cursors in a `MemoryStore` shared by the mode's runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from podjobs import client as client_mod
from podjobs.acker import Acker
from podjobs.chain import worker_chain
from podjobs.context import Context
from podjobs.errors import PodjobsError
from podjobs.executor import Executor
from podjobs.invoke import Outcome, invoke
from podjobs.iteration.job import STORE_EXTRA
from podjobs.iteration.store import MemoryStore
from podjobs.jobs import Job, JobDef
from podjobs.middleware import perform_middleware
from podjobs.payload import dumps
from podjobs.settler import Settler

from .memory import Captured, MemoryBackend

log = logging.getLogger("podjobs.testing")

WORKER_ID = "podjobs-testing:0:inline.1"

#: a job, a job class, or a job's registered name
JobRef = JobDef | type[Job] | str

_UNSET: Any = object()


class JobFailed(PodjobsError):  # type: ignore[misc,unused-ignore]
    """A job run by the testing kit ended in the dead set (its retries used up)."""

    def __init__(self, dead: dict[str, Any]) -> None:
        self.dead = dead
        err = dead.get("error") or {}
        super().__init__(
            f"job {dead.get('job')} {dead.get('id')} failed after {int(dead.get('attempt') or 0) + 1} "
            f"attempt(s) ({dead.get('dead_reason')}): {err.get('class', '')}: "
            f"{err.get('message', '')}\n{err.get('trace', '')}".rstrip())


def job_name(job: JobRef) -> str:
    if isinstance(job, str):
        return job
    if isinstance(job, type):
        return job.definition.name
    return job.name


class Jobs:
    """A testing mode's jobs: what waits, what ran, what died (see the module docstring)."""

    def __init__(self, mode: str, *, raise_dead: bool = True, max_runs: int = 10_000) -> None:
        if mode not in ("inline", "fake"):
            raise ValueError(f"mode {mode!r}: use 'inline' or 'fake'")
        self.mode = mode
        self.raise_dead = raise_dead
        #: a bound on the runs of one drain (a job that enqueues itself forever)
        self.max_runs = max_runs
        self.backend = MemoryBackend()
        self.client = client_mod.Client(self.backend)
        self.store = MemoryStore()
        self.acker = Acker(self.backend)  # never started: nothing to flush in memory
        self.settler = Settler(self.backend, self.acker, lambda: WORKER_ID)
        self._executor: Executor | None = None
        self._draining = False
        #: every job run, in the order it ran (one entry per attempt)
        self.ran: list[Captured] = []
        if mode == "inline":
            self.backend.on_enqueue = self._run_now

    # -- what was enqueued ---------------------------------------------------------

    @property
    def waiting(self) -> list[Captured]:
        """Jobs enqueued and not run yet (fake mode; inline runs them at once)."""
        return list(self.backend.jobs)

    @property
    def enqueued(self) -> list[Captured]:
        """Every job the application enqueued, run or not, in order."""
        return list(self.backend.history)

    @property
    def dead(self) -> list[dict[str, Any]]:
        """Dead payloads (jobs that failed their last attempt), with "error"."""
        return list(self.backend.dead)

    def find(self, job: JobRef | None = None, args: Sequence[Any] | None = None,
             kwargs: dict[str, Any] | None = None, *, tenant: str | None = _UNSET,
             queue: str | None = None) -> list[Captured]:
        """The enqueued jobs that match (None / not given: any)."""
        name = None if job is None else job_name(job)
        want_args = None if args is None else dumps(list(args))
        want_kwargs = None if kwargs is None else dumps(kwargs)
        return [c for c in self.backend.history
                if (name is None or c.job == name)
                and (want_args is None or dumps(c.args) == want_args)
                and (want_kwargs is None or dumps(c.kwargs) == want_kwargs)
                and (tenant is _UNSET or c.tenant == tenant)
                and (queue is None or c.queue == queue)]

    def assert_enqueued(self, job: JobRef, args: Sequence[Any] | None = None,
                        kwargs: dict[str, Any] | None = None, *, tenant: str | None = _UNSET,
                        queue: str | None = None, count: int | None = None) -> list[Captured]:
        """Fail (AssertionError listing what was enqueued) unless a matching job was enqueued
        (exactly `count` of them when given). Returns the matches."""
        found = self.find(job, args, kwargs, tenant=tenant, queue=queue)
        if (count is None and not found) or (count is not None and len(found) != count):
            want = [f"{job_name(job)}"]
            if args is not None:
                want.append(f"args={list(args)!r}")
            if kwargs is not None:
                want.append(f"kwargs={kwargs!r}")
            if tenant is not _UNSET:
                want.append(f"tenant={tenant!r}")
            if queue is not None:
                want.append(f"queue={queue!r}")
            times = "at least once" if count is None else f"{count} time(s)"
            seen = "\n  ".join(repr(c) for c in self.backend.history) or "(nothing)"
            raise AssertionError(f"expected {' '.join(want)} enqueued {times}, found "
                                 f"{len(found)}; enqueued:\n  {seen}")
        return found

    def assert_nothing_enqueued(self, job: JobRef | None = None) -> None:
        found = self.find(job)
        if found:
            raise AssertionError("expected nothing enqueued, found:\n  "
                                 + "\n  ".join(repr(c) for c in found))

    def clear(self) -> None:
        """Forget everything waiting, enqueued, run and dead."""
        self.backend.jobs.clear()
        self.backend.history.clear()
        self.backend.dead.clear()
        self.backend.unique.clear()
        self.ran.clear()

    # -- running -------------------------------------------------------------------

    def drain(self) -> int:
        """Run every waiting job, and what those enqueue, until nothing waits (delays and
        retry backoffs are not waited for). Returns the number of runs. `JobFailed` for the
        first job that ends dead (unless raise_dead is False)."""
        if self._draining:
            return 0  # a job enqueued from a job: the outer drain runs it next
        self._draining = True
        runs = 0
        try:
            while True:
                c = self.backend.take_next()
                if c is None:
                    return runs
                runs += 1
                if runs > self.max_runs:
                    raise PodjobsError(
                        f"podjobs.testing: more than {self.max_runs} runs in one drain (a job "
                        f"that enqueues itself forever?); raise max_runs if that is expected")
                self.run(c)
        finally:
            self._draining = False

    def run(self, c: Captured) -> Outcome | None:
        """Run one captured job through the worker's chain (settled into this backend)."""
        self.ran.append(c)
        dead_before = len(self.backend.dead)
        raw = dumps(c.payload).encode()
        out = self._executor_().execute(c.queue, raw, WORKER_ID)
        if self.raise_dead and len(self.backend.dead) > dead_before:
            raise JobFailed(self.backend.dead[-1])
        return out

    def _run_now(self) -> None:
        self.drain()

    def _executor_(self) -> Executor:
        if self._executor is None:
            chain = worker_chain(self.settler, self.acker)
            self._executor = Executor(self.settler, chain, runner=self._runner)
        return self._executor

    def _runner(self, jd: JobDef, ctx: Context, args: list[Any], kwargs: dict[str, Any]) -> Outcome:
        ctx.extras[STORE_EXTRA] = self.store
        return invoke(jd, ctx, args, kwargs, perform_middleware())


@contextlib.contextmanager
def installed(jobs: Jobs) -> Iterator[Jobs]:
    """Make `jobs.client` the process-wide client while the block runs, then put back the
    one before (not closed)."""
    with client_mod._lock:
        before = client_mod._default
        client_mod._default = jobs.client
    try:
        yield jobs
    finally:
        with client_mod._lock:
            client_mod._default = before


@contextlib.contextmanager
def inline(*, raise_dead: bool = True) -> Iterator[Jobs]:
    """Jobs run when enqueued (see the module docstring)."""
    with installed(Jobs("inline", raise_dead=raise_dead)) as jobs:
        yield jobs


@contextlib.contextmanager
def fake(*, raise_dead: bool = True) -> Iterator[Jobs]:
    """Enqueues are captured; `drain()` runs them (see the module docstring)."""
    with installed(Jobs("fake", raise_dead=raise_dead)) as jobs:
        yield jobs
