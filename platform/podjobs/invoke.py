"""Running a job function and describing what happened, with no queue involved.

`invoke(jobdef, ctx, args, kwargs)` calls the function with middleware around
it and returns an `Outcome`; the worker settles the outcome (ack, retry, dead).
The same code runs in a worker thread and inside a process-isolation child.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from enum import Enum
from typing import Any

from podjobs.context import Context, _set_current
from podjobs.jobs import JobDef
from podjobs.middleware import Middleware, SkipJob, perform_middleware


class Failure(str, Enum):
    """Why a run did not succeed; decides retry or dead."""

    ERROR = "error"  # the job raised: retried with backoff
    REENQUEUE = "reenqueue"  # the job asked to be put back (resume, throttle): not a failure
    TIMEOUT = "timeout"  # ran past its timeout: retried
    MEMORY = "memory"  # child process over its memory limit: retried
    CRASH = "crash"  # child process died: retried
    ARGUMENTS = "arguments"  # arguments do not fit the function: dead at once
    REFUSED = "refused"  # a middleware refused it: dead at once


class Reenqueue(Exception):
    """Raise from a job to put it back without counting a failed attempt: an
    interrupted iteration job resuming from its checkpoint, or a throttled job.

    `updates` are merged into the payload (for example {"cursor": ...});
    `delay` is seconds to wait (0: at the back of its queue now)."""

    def __init__(self, delay: float = 0.0, updates: dict[str, Any] | None = None,
                 reason: str = "interrupted") -> None:
        super().__init__(reason)
        self.delay = delay
        self.updates = updates or {}
        self.reason = reason


class Unfinished(Exception):
    """Raise from a job whose delivery is over although the job has not finished in it, and
    that is not put back on a queue: an iteration job parked by a pause (`state` "paused":
    a resume puts it back), stopped because another run of it took over ("superseded"),
    cancelled ("cancelled"), or a duplicate delivery of one that finished ("duplicate").
    The delivery is acked without its follow-ups; a tracked job's record is not marked
    succeeded (see podjobs.status.unfinished)."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


class JobTimeout(BaseException):
    """Raised inside a job thread that ran past its timeout (BaseException so that
    `except Exception` in job code does not swallow it)."""


class Outcome:
    """How one run ended."""

    __slots__ = ("ok", "result", "failure", "error_class", "message", "trace", "delay",
                 "updates", "unfinished", "duration")

    def __init__(self, ok: bool, result: Any = None, failure: Failure | None = None,
                 error_class: str = "", message: str = "", trace: str = "", delay: float = 0.0,
                 updates: dict[str, Any] | None = None, unfinished: str = "",
                 duration: float = 0.0) -> None:
        self.ok = ok
        self.result = result
        self.failure = failure
        self.error_class = error_class
        self.message = message
        self.trace = trace
        #: Failure.REENQUEUE: seconds to wait and payload updates
        self.delay = delay
        self.updates = updates
        #: ok, but the job has not finished (the state of `Unfinished`); "" when it has
        self.unfinished = unfinished
        #: seconds the run took (set by the executor around the runner)
        self.duration = duration

    def __repr__(self) -> str:
        return "Outcome(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"

    def error_dict(self) -> dict[str, str]:
        return {"class": self.error_class, "message": self.message[:2000], "trace": self.trace}


def failed(failure: Failure, error_class: str, message: str, trace: str = "") -> Outcome:
    return Outcome(False, None, failure, error_class, message, trace)


def _trace(exc: BaseException) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return "".join(lines[-12:])[-4000:]


def invoke(jd: JobDef, ctx: Context, args: list[Any], kwargs: dict[str, Any],
           mws: Sequence[Middleware] | None = None) -> Outcome:
    """Run the job with the job-side hooks of `mws` around it (default: the middleware
    added with podjobs.add_middleware); never raises (except KeyboardInterrupt/SystemExit)."""
    if mws is None:
        mws = perform_middleware()
    _set_current(ctx)
    try:
        try:
            for m in mws:
                m.before_perform(ctx)
        except SkipJob as exc:
            return failed(Failure.REFUSED, "SkipJob", str(exc))
        try:
            if jd.options.idempotent and not ctx.once(idempotency_key(jd, ctx, args, kwargs)):
                result = None  # a committed run did it (podjobs.effects)
            else:
                result = jd.fn(ctx, *args, **kwargs) if jd.takes_ctx else jd.fn(*args, **kwargs)
            if ctx._db is not None:
                ctx._finish_db(True)  # a failed commit fails the job
        except Reenqueue as exc:
            if ctx._db is not None:
                ctx._finish_db(True)  # what the job did before stopping is kept
            _after(mws, ctx, True, None)
            return Outcome(False, None, Failure.REENQUEUE, "Reenqueue", exc.reason,
                           delay=exc.delay, updates=exc.updates)
        except Unfinished as exc:
            if ctx._db is not None:
                ctx._finish_db(True)  # what the job did before stopping is kept
            _after(mws, ctx, True, None)
            return Outcome(True, None, unfinished=exc.state)
        except JobTimeout:
            _rollback(ctx)
            out = failed(Failure.TIMEOUT, "JobTimeout",
                         f"job ran past its timeout of {jd.options.timeout} s")
            _after(mws, ctx, False, None)
            return out
        except Exception as exc:
            _rollback(ctx)
            why = jd.arguments_fit(args, kwargs) if isinstance(exc, TypeError) else None
            _after(mws, ctx, False, exc)
            if why is not None:
                return failed(Failure.ARGUMENTS, "TypeError",
                              f"arguments do not fit {jd.name}{jd._signature}: {why}")
            return failed(Failure.ERROR, type(exc).__qualname__, str(exc), _trace(exc))
        _after(mws, ctx, True, None)
        return Outcome(True, result)
    finally:
        _set_current(None)


def idempotency_key(jd: JobDef, ctx: Context, args: list[Any], kwargs: dict[str, Any]) -> str:
    """The ctx.once key of an `idempotent=` job's run: its job id, or its key function's
    answer for the arguments (prefixed with the job's name)."""
    how = jd.options.idempotent
    if how is True:
        return f"job:{ctx.job_id}"
    assert callable(how)
    return f"{jd.name}:{how(*args, **kwargs)}"


def _rollback(ctx: Context) -> None:
    try:
        ctx._finish_db(False)
    except Exception:  # the job's own error matters more than a failed rollback
        pass


def _after(mws: Sequence[Middleware], ctx: Context, ok: bool, exc: BaseException | None) -> None:
    for m in reversed(mws):
        m.after_perform(ctx, ok, exc)
