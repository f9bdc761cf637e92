"""The core links of the middleware chain (podjobs.middleware), one feature a file.

`worker_chain(...)` puts a worker's chain together, outermost first: the links a pod
worker adds (the tenant check of podjobs.pods), at-most-once, retries, follow-ups and
unique keys, the middleware added with `podjobs.add_middleware` (the app's, iteration's),
the job log, status tracking (and the metrics link outermost with `--metrics-port`). Timeouts are job-side (`timeouts.Timeouts`, thread isolation).
"""

from __future__ import annotations

from collections.abc import Sequence

from podjobs.acker import Acker
from podjobs.middleware import Middleware, middleware
from podjobs.settler import Settler

from .at_most_once import AtMostOnce
from .followups import FollowUps
from .joblog import JobLog
from .retries import Retries
from .tracking import Tracking


def worker_chain(settler: Settler, acker: Acker, outer: Sequence[Middleware] = (),
                 pod: str | None = None) -> list[Middleware]:
    """A worker's chain: `outer` (metrics, a pod worker's links), the core links, the added
    ones, the job log, tracking."""
    return [*outer, AtMostOnce(settler), Retries(), FollowUps(), *middleware(), JobLog(pod),
            Tracking(acker)]


__all__ = ["AtMostOnce", "FollowUps", "JobLog", "Retries", "Tracking", "worker_chain"]
