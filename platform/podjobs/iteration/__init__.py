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
`admin` (list, show, pause, resume, cancel; the command line is
podjobs.surface.cmd_iterations), `testing` (run inline for N items), `iterkeys` (the
Redis keys).

The names load on first use (PEP 562), so importing one light module of the package
(`podjobs.iteration.state`, for `podjobs iterations --help`) does not load Redis.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from podjobs.iteration import enumerators
    from podjobs.iteration.enumerators import Enumerator
    from podjobs.iteration.job import IterationJob, RunResult, Throttle, run_iteration
    from podjobs.iteration.parallel import ParallelHandle
    from podjobs.iteration.state import Progress, State

#: public name -> the module that defines it
_WHERE = {"enumerators": "podjobs.iteration.enumerators",
          "Enumerator": "podjobs.iteration.enumerators",
          "IterationJob": "podjobs.iteration.job", "RunResult": "podjobs.iteration.job",
          "Throttle": "podjobs.iteration.job", "run_iteration": "podjobs.iteration.job",
          "ParallelHandle": "podjobs.iteration.parallel",
          "Progress": "podjobs.iteration.state", "State": "podjobs.iteration.state"}

__all__ = ["Enumerator", "IterationJob", "ParallelHandle", "Progress", "RunResult", "State",
           "Throttle", "enumerators", "run_iteration"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'podjobs.iteration' has no attribute {name!r}")
    module = importlib.import_module(_WHERE[name])
    value = module if name == "enumerators" else getattr(module, name)
    globals()[name] = value
    return value
