"""Middleware: every feature around a job is a link in one chain (like Dramatiq's and
Sidekiq's), not a branch in the executor.

A middleware subclasses `Middleware` and overrides the hooks it needs; the rest do
nothing and cost nothing (a hook a class does not override is never called).

Worker side, in the executor thread (`podjobs.executor` runs the chain):

- `wants(jd, shape)`: whether this middleware takes part for a job definition and a
  delivery shape (`podjobs.delivery` bits: tracked, follow-ups, unique, tenant). Asked once
  per job definition and shape; the hooks chosen are then called for every such delivery.
- `before_start(d, jd)`, in chain order: may return a `Settlement` that ends the delivery
  without running the job (a tenant's job forwarded to its pod), or `NOTHING` (not run,
  nothing to settle); None lets it run.
- `on_success(d, jd, out, s)` / `on_failure(d, jd, out, s)`, inner first: shape the
  settlement the run's `Outcome` gave (follow-ups on a success, a retry instead of dead).
- `before_settle(d, jd, s)`, inner first, for every settlement (also one made before the
  job ran): the last look (a tracked job's status write).
- `after_settle(d, jd, out, s)`, inner first: always, once the delivery is over (also
  when settling failed), with the outcome (None: not run) and the settlement sent (None: a
  plain success acked in a batch).
- `worker_start(worker)` / `worker_stop(worker)`: when a worker starts and stops.

Job side, in the thread (or process-isolation child) that runs the job function:

- `before_perform(ctx)`: may raise `SkipJob(reason)` to dead-letter without running.
- `after_perform(ctx, ok, exc)`: after the job function, ok=True on success.

Chain order, outermost first: the pods' tenant check, at-most-once, retries, follow-ups
and unique keys, the middleware added with `podjobs.add_middleware` (the app's, iteration's),
status tracking, timeouts. Register app middleware with `podjobs.add_middleware(m)` in the
app module, so that workers and process-isolation children importing it get the same list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from podjobs.context import Context
from podjobs.delivery import Delivery
from podjobs.settlement import Settlement

if TYPE_CHECKING:
    from podjobs.invoke import Outcome
    from podjobs.jobs import JobDef


class SkipJob(Exception):
    """Raised by a middleware to refuse a job; it goes to the dead set with the reason."""


class Middleware:
    """A link of the chain (see the module docstring); override the hooks you need."""

    def wants(self, jd: JobDef, shape: int) -> bool:
        """Take part for this job definition and delivery shape (asked once for each)."""
        return True

    def worker_start(self, worker: Any) -> None:
        """A worker is starting (`worker` is a podjobs.worker.Worker)."""

    def worker_stop(self, worker: Any) -> None:
        """A worker stopped."""

    def before_start(self, d: Delivery, jd: JobDef) -> Settlement | None:
        """Before the job runs: a Settlement ends the delivery without running it."""
        return None

    def on_success(self, d: Delivery, jd: JobDef, out: Outcome, s: Settlement) -> Settlement:
        """The job returned (or ended its delivery unfinished: `s.finished` False)."""
        return s

    def on_failure(self, d: Delivery, jd: JobDef, out: Outcome, s: Settlement) -> Settlement:
        """The job failed: `s` is a DEAD settlement (or REENQUEUE when it asked for that)."""
        return s

    def before_settle(self, d: Delivery, jd: JobDef, s: Settlement) -> Settlement:
        """The settlement about to be sent."""
        return s

    def after_settle(self, d: Delivery, jd: JobDef, out: Outcome | None,
                     s: Settlement | None) -> None:
        """The delivery is over: `out` is the run's outcome (None: not run), `s` the
        settlement sent (None: a plain success acked in a batch, or nothing settled)."""

    def before_perform(self, ctx: Context) -> None:
        """Job side, before the job function; raise SkipJob to refuse the job."""

    def after_perform(self, ctx: Context, ok: bool, exc: BaseException | None) -> None:
        """Job side, after the job function, whether it succeeded or not."""


PERFORM_HOOKS = ("before_perform", "after_perform")


def overrides(m: Middleware, hook: str) -> bool:
    """Whether `m`'s class defines `hook` itself (a hook left as the default is skipped)."""
    return getattr(type(m), hook) is not getattr(Middleware, hook)


class Plan:
    """The hooks one job definition and delivery shape pass through, chosen once."""

    __slots__ = ("before_start", "on_success", "on_failure", "before_settle", "after_settle",
                 "plain")

    def __init__(self, chain: Sequence[Middleware], jd: JobDef, shape: int) -> None:
        wanted = [m for m in chain if m.wants(jd, shape)]
        outer = wanted
        inner = wanted[::-1]
        self.before_start: tuple[Callable[[Delivery, JobDef], Settlement | None], ...] = tuple(
            m.before_start for m in outer if overrides(m, "before_start"))
        self.on_success: tuple[Callable[[Delivery, JobDef, Outcome, Settlement], Settlement], ...] = tuple(
            m.on_success for m in inner if overrides(m, "on_success"))
        self.on_failure: tuple[Callable[[Delivery, JobDef, Outcome, Settlement], Settlement], ...] = tuple(
            m.on_failure for m in inner if overrides(m, "on_failure"))
        self.before_settle: tuple[Callable[[Delivery, JobDef, Settlement], Settlement], ...] = tuple(
            m.before_settle for m in inner if overrides(m, "before_settle"))
        self.after_settle: tuple[Callable[[Delivery, JobDef, Outcome | None, Settlement | None], None], ...] = tuple(
            m.after_settle for m in inner if overrides(m, "after_settle"))
        #: a success needs no hook: the executor acks it in a batch at once
        self.plain = not self.on_success and not self.before_settle


_middleware: list[Middleware] = []
_perform: list[list[Middleware]] = []


def add_middleware(m: Middleware) -> None:
    """Add `m` to the chain of every worker started after this (and to job-side hooks)."""
    _middleware.append(m)
    _perform.clear()


def middleware() -> list[Middleware]:
    """The middleware added with add_middleware, in order."""
    return _middleware


def perform_middleware() -> list[Middleware]:
    """The added middleware with job-side hooks (what `invoke` calls by default)."""
    if not _perform:
        _perform.append(perform_chain(_middleware))
    return _perform[0]


def perform_chain(chain: Sequence[Middleware]) -> list[Middleware]:
    """The middleware of `chain` with job-side hooks, in order."""
    return [m for m in chain if any(overrides(m, h) for h in PERFORM_HOOKS)]
