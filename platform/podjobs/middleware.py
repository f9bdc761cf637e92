"""Middleware: cross-cutting behaviour as hooks around each job run.

A middleware subclasses `Middleware` and overrides the hooks it needs; the
defaults do nothing. Hooks run in the thread (or child process) that runs the
job. Register with `podjobs.add_middleware(m)` in the app module, so that
workers and process-isolation children importing the app get the same list.

- before_perform(ctx): may raise `SkipJob(reason)` to dead-letter without running.
- after_perform(ctx, ok, exc): runs after the job, ok=True on success.
"""

from __future__ import annotations

from podjobs.context import Context


class SkipJob(Exception):
    """Raised by a middleware to refuse a job; it goes to the dead set with the reason."""


class Middleware:
    def before_perform(self, ctx: Context) -> None:
        """Called before the job function; raise SkipJob to refuse the job."""

    def after_perform(self, ctx: Context, ok: bool, exc: BaseException | None) -> None:
        """Called after the job function, whether it succeeded or not."""


_middleware: list[Middleware] = []


def add_middleware(m: Middleware) -> None:
    _middleware.append(m)


def middleware() -> list[Middleware]:
    return _middleware
