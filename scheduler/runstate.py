"""A migration run's record and its state machine (pure: no ZooKeeper, no shard).

1. `RunState`, a `str` enum (the strings are those of the records in ZooKeeper, the shard's
   `podjobs_migrations` rows and `migrations status --json`). States follow Vitess Online
   DDL; "(none)" is a (shard, revision) without a record:

       (none)    --the leader queues it-----------------------------> queued
       queued    --its job is gone: the leader queues it again--------> queued
       queued    --a runner takes the shard lock, the DDL starts------> running
       queued    --the shard already has it---------------------------> complete
       queued    --an error no retry fixes, its job died--------------> failed
       queued    --migrations cancel----------------------------------> cancelled
       running   --the schema step done, its backfill enqueued--------> running
       running   --schema step (and backfill) done, or already there--> complete
       running   --error, lost lock, runner gone, backfill died-------> failed
       running   --migrations cancel (stops before its next step)-----> cancelled
       failed | cancelled --migrations retry, schema step applied-----> running (new backfill)
       failed | cancelled --migrations retry--------------------------> (none) (queued again)
       failed | cancelled | (none) --migrations skip------------------> complete (stamped, not run)

   `complete` is final. Entering `complete`, `failed` or `cancelled` stamps `finished_at`;
   leaving `failed` or `cancelled` for an open state clears it.
2. `transition(run, to, now=..., **changes)` checks `run.state -> to` against `TRANSITIONS`,
   refusing any other with `IllegalTransition`, then applies it to the record in memory
   (`RunStore.update` writes it); `new_run(...)` is the transition out of "(none)" and
   `check(run.state, None)` the one back to it (the record deleted).
3. `Run`, the record: one per (shard, revision), its JSON form in ZooKeeper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from podjobs.errors import PodjobsError


class RunState(StrEnum):
    """A migration run's state (the machine is in the module docstring)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: states in which a run is still going (one at a time per shard)
OPEN = frozenset({RunState.QUEUED, RunState.RUNNING})
#: states that stop the rollout of the revision until an operator acts (it is halted)
STOPPED = frozenset({RunState.FAILED, RunState.CANCELLED})
#: states that stamp finished_at
FINISHED = frozenset({RunState.COMPLETE}) | STOPPED

#: state (None: no record) -> the states it may go to (None: the record is deleted)
TRANSITIONS: dict[RunState | None, frozenset[RunState | None]] = {
    None: frozenset({RunState.QUEUED, RunState.COMPLETE}),
    RunState.QUEUED: frozenset({RunState.QUEUED, RunState.RUNNING, RunState.COMPLETE,
                                RunState.FAILED, RunState.CANCELLED}),
    RunState.RUNNING: frozenset({RunState.RUNNING, RunState.COMPLETE, RunState.FAILED,
                                 RunState.CANCELLED}),
    RunState.COMPLETE: frozenset(),
    RunState.FAILED: frozenset({RunState.RUNNING, RunState.COMPLETE, None}),
    RunState.CANCELLED: frozenset({RunState.RUNNING, RunState.COMPLETE, None}),
}


class IllegalTransition(PodjobsError):
    """A change of a migration run's state that its state machine does not have."""


def _name(state: RunState | None) -> str:
    return "(none)" if state is None else state.value


def allowed(src: RunState | None, dst: RunState | None) -> bool:
    return dst in TRANSITIONS[src]


def check(src: RunState | None, dst: RunState | None, what: str = "a migration run") -> None:
    """Raise `IllegalTransition` unless `src -> dst` is a transition (None: no record)."""
    if not allowed(src, dst):
        targets = ", ".join(sorted(_name(s) for s in TRANSITIONS[src])) or "nothing: it is final"
        raise IllegalTransition(f"{what}: {_name(src)} -> {_name(dst)} is not a transition of a "
                                f"migration run (from {_name(src)}: {targets})")


@dataclass
class Run:
    pod: str
    revision: str
    state: RunState
    job_id: str = ""
    queued_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    worker: str = ""
    error: str = ""
    fence: int | None = None
    #: which scheduler term queued it (for audits: a deposed leader queues nothing)
    queued_by: str = ""
    queued_term: int | None = None
    attempts: int = 1
    backfill_job: str = ""
    skipped: bool = False
    cancel_requested: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = -1

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("version")
        d["state"] = self.state.value
        return d

    @classmethod
    def from_json(cls, obj: dict[str, Any], version: int) -> Run:
        known = {f for f in cls.__dataclass_fields__ if f != "version"}
        kw = {k: v for k, v in obj.items() if k in known}
        kw["state"] = RunState(kw.get("state", RunState.QUEUED))
        return cls(**kw, version=version)


_CHANGEABLE = frozenset(f.name for f in fields(Run)) - {"pod", "revision", "state", "version"}


def _set(run: Run, changes: dict[str, Any]) -> None:
    unknown = set(changes) - _CHANGEABLE
    if unknown:
        raise TypeError(f"not a changeable field of a migration run: {', '.join(sorted(unknown))}")
    for k, v in changes.items():
        setattr(run, k, v)


def transition(run: Run, to: RunState, *, now: float, **changes: Any) -> Run:
    """Move `run` to `to` (the same record, changed in memory), or raise `IllegalTransition`.

    `finished_at` becomes `now` when `to` is final or stopped and None when a stopped run
    opens again; `changes` sets other fields of the record (error, worker, fence ...).
    """
    check(run.state, to, f"migration run {run.revision} on {run.pod}")
    if to in FINISHED:
        run.finished_at = now
    elif run.state in FINISHED:
        run.finished_at = None
    run.state = to
    _set(run, changes)
    return run


def new_run(pod: str, revision: str, to: RunState, *, now: float, **changes: Any) -> Run:
    """The record of a (shard, revision) that has none yet, in state `to`."""
    check(None, to, f"migration run {revision} on {pod}")
    run = Run(pod, revision, to, queued_at=now, finished_at=now if to in FINISHED else None)
    _set(run, changes)
    return run
