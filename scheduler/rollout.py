"""Pure decisions of the migration rollout: what to queue now, and when a wait is over.

1. `waves(pods, canary, size)`: the canary pod alone, then the other pods by
   name in waves of `size`.
2. `plan(order, shards, halted, canary, wave_size)`: the (pod, revision) runs
   to queue now. A shard gets its next pending revision when
   - nothing is queued or running on it (one migration at a time per shard);
   - the revision it is at has no unfinished record (a backfill still running,
     a failure) - the next starts only after the previous succeeded;
   - the revision is not halted and has no record on that shard yet;
   - every pod of the earlier waves has completed the revision (the canary
     first, then wave after wave).
3. `wait_outcome(order, shards, halted, target)`: "unpublished" when the
   leader has not published `target` yet (a deploy's new revision before the
   restarted scheduler leads: waited for, never a failure, never done);
   "done" when every shard has completed `target`; "failed" (with the
   reasons) when a shard cannot get there without an operator (a failed or
   cancelled run, or a halt, on a revision up to `target` it has not
   applied); else "waiting".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .runstate import OPEN, STOPPED, RunState


@dataclass(frozen=True)
class ShardView:
    """One shard as the leader sees it: its revision and its run records' states."""

    pod: str
    current: str | None
    #: revision -> run state (a `RunState`, or its string)
    runs: Mapping[str, str] = field(default_factory=dict)
    #: False when the shard could not be read (it takes no decision)
    known: bool = True


def waves(pods: Sequence[str], canary: str | None, size: int) -> list[list[str]]:
    if size < 1:
        raise ValueError(f"wave size {size} must be at least 1")
    rest = sorted(p for p in pods if p != canary)
    out: list[list[str]] = [[canary]] if canary is not None and canary in pods else []
    out += [rest[i:i + size] for i in range(0, len(rest), size)]
    return out


def _index(order: Sequence[str], rev: str | None) -> int:
    return -1 if rev is None else order.index(rev)


def completed(order: Sequence[str], sv: ShardView, rev: str) -> bool:
    """The shard has `rev` applied and its record (if any) says complete."""
    if not sv.known or _index(order, sv.current) < _index(order, rev):
        return False
    return sv.runs.get(rev, RunState.COMPLETE) == RunState.COMPLETE


def plan(order: Sequence[str], shards: Sequence[ShardView], halted: set[str] | frozenset[str],
         canary: str | None, wave_size: int) -> list[tuple[str, str]]:
    by_pod = {s.pod: s for s in shards}
    wave_of = {p: i for i, w in enumerate(waves(list(by_pod), canary, wave_size)) for p in w}
    out = []
    for sv in shards:
        if not sv.known or any(st in OPEN for st in sv.runs.values()):
            continue
        pos = _index(order, sv.current)
        if pos + 1 >= len(order):
            continue
        if sv.current is not None and \
                sv.runs.get(sv.current, RunState.COMPLETE) != RunState.COMPLETE:
            continue
        nxt = order[pos + 1]
        if nxt in halted or nxt in sv.runs:
            continue
        earlier = [by_pod[p] for p, w in wave_of.items() if w < wave_of[sv.pod]]
        if all(completed(order, e, nxt) for e in earlier):
            out.append((sv.pod, nxt))
    return out


def wait_outcome(order: Sequence[str], shards: Sequence[ShardView],
                 halted: Mapping[str, str], target: str) -> tuple[str, list[str]]:
    if target not in order:
        return "unpublished", [f"{target} is not published by the leader yet (it knows "
                               f"{', '.join(order) or 'no revision'})"]
    t = order.index(target)
    reasons = []
    for sv in shards:
        if completed(order, sv, target):
            continue
        for rev in order[max(0, _index(order, sv.current)):t + 1]:
            state = sv.runs.get(rev)
            if state in STOPPED:
                reasons.append(f"{sv.pod}: {rev} {state}")
                break
            if rev in halted and not completed(order, sv, rev):
                reasons.append(f"{sv.pod}: {rev} halted ({halted[rev]})")
                break
    if reasons:
        return "failed", reasons
    if all(completed(order, sv, target) for sv in shards):
        return "done", []
    return "waiting", []
