"""The iteration link of the middleware chain (podjobs.middleware): what an iteration
job's unfinished delivery (`podjobs.invoke.Unfinished`) means for its unique key.

An iteration job's delivery can end without the job finishing: paused (parked until a
resume puts it back), superseded by another run, a duplicate of a finished one, or
cancelled. The core acks it without follow-ups (podjobs.executor); only a cancelled job
is over for good, so only then is its unique key released (an identical job may be
enqueued again). Added to every worker's chain when podjobs.iteration.job is imported.
"""

from __future__ import annotations

from podjobs.delivery import UNIQUE, Delivery
from podjobs.invoke import Outcome
from podjobs.jobs import JobDef
from podjobs.middleware import Middleware
from podjobs.settlement import Settlement

#: the unfinished state that ends a job for good
CANCELLED = "cancelled"


class IterationUnfinished(Middleware):
    def wants(self, jd: JobDef, shape: int) -> bool:
        return bool(shape & UNIQUE)

    def on_success(self, d: Delivery, jd: JobDef, out: Outcome, s: Settlement) -> Settlement:
        if not s.finished and s.reason == CANCELLED:
            s.unique = d.unique
        return s
