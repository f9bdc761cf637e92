"""Timeouts (`@job(timeout=seconds)`) for jobs running in threads: job-side middleware,
innermost, so the clock starts right before the job function and stops right after it.

The worker's watchdog (podjobs.watchdog) raises JobTimeout inside a job thread past its
deadline. With process isolation the parent enforces the timeout instead (it kills the
child, podjobs.isolation), counting from the child's "started".
"""

from __future__ import annotations

from podjobs.context import Context
from podjobs.invoke import JobTimeout
from podjobs.middleware import Middleware
from podjobs.watchdog import Watchdog


class Timeouts(Middleware):
    def __init__(self, watchdog: Watchdog, seconds: float) -> None:
        self.watchdog = watchdog
        self.seconds = seconds

    def before_perform(self, ctx: Context) -> None:
        self.watchdog.arm(self.seconds)

    def after_perform(self, ctx: Context, ok: bool, exc: BaseException | None) -> None:
        try:
            self.watchdog.disarm()
        except JobTimeout:  # fired just as the job ended: it ended in time
            pass
