"""Job iteration: long jobs as an enumerator plus a per-item step, checkpointed,
interruptible, resumable, throttled, pausable, visible, and splittable into parallel parts.

    from podjobs.iteration import IterationJob, enumerators

    class Backfill(IterationJob):
        queue = "low"
        checkpoint_every = 100

        def build_enumerator(self, ctx, cursor, *, stop):
            return enumerators.int_range(0, stop, cursor)

        def each_iteration(self, ctx, i, *, stop):
            ...

    Backfill.enqueue(stop=1_000_000, tenant="shop-1")
    Backfill.enqueue_parallel(4, span=(0, 1_000_000), stop=1_000_000, then=Done)

Modules: `job` (IterationJob and its run loop), `enumerators` (builders), `state`
(State, Progress, pure decisions), `store` (checkpoints in Redis / memory), `parallel`,
`admin` (list, show, pause, resume, cancel), `cli` (`podjobs iterations ...`), `testing`
(run inline for N items), `keys` (the Redis keys).
"""

from podjobs.iteration import enumerators
from podjobs.iteration.enumerators import Enumerator
from podjobs.iteration.job import IterationJob, RunResult, Throttle, run_iteration
from podjobs.iteration.parallel import ParallelHandle
from podjobs.iteration.state import Progress, State

__all__ = ["Enumerator", "IterationJob", "ParallelHandle", "Progress", "RunResult", "State",
           "Throttle", "enumerators", "run_iteration"]
