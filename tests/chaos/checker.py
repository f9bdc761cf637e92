"""The checker, in Jepsen's manner: a pure function from what was observed to a report.

Inputs (`Observation`): the ledger's events, two snapshots of the pod's in-flight hashes
taken at least heartbeat TTL + 5 s apart at the end, the pids still alive then, the
scenario's fault facts (paused pids and when they resumed, seconds from SIGTERM to exit
and their bound, poisoned entries and the dead-set writes they cost) and whether the
fault admits duplicates (a worker killed or cut off mid-job: at-least-once) and overlaps
(only a paused worker that still holds a run while another worker runs the job again).

Counts (`Report`):
- acknowledged: enqueues the client saw succeed;
- lost: acknowledged, never finished (an at_most_once job that started and was cut off
  is not lost: at most once allows that);
- twice: finished more than once; overlapping: two runs of one id at the same time
  (seen by the ledger's flock, or two finished runs whose intervals intersect);
- amo_twice: an at_most_once job started more than once;
- stranded: in an in-flight hash in both end snapshots and not running in a live process;
- unexpected: finished but never enqueued (nor pushed raw by the scenario);
- zombie_reruns: jobs a paused worker decided to start (its last ownership check,
  ctx.claimed_at; else the start itself) after it resumed, under a worker id (generation)
  that had been reaped during the pause: it must not start what it reserved before the reap
  (its new generation may start anything it reserves afterwards; a start decided before the
  pause and recorded after it is a worker cut off mid-job, a duplicate at-least-once admits);
- slow_exits: SIGTERMed workers that took longer than the bound to exit;
- poison: entries whose dead-set writes were not exactly one with reason malformed, or
  that ran;
- held: jobs still held or staged for a tenant move at the end (held forever: nothing
  will ever release them);
- misplaced: runs that started on a pod the tenant's placement did not allow at that
  (wall-clock) time: `placement` is a list of (from, pod or None = nowhere), sorted,
  `pod_of_pid` says which pod each worker serves, `placed` which ids it is about (e.g. a job run on the old pod after
  the move's fence, or on the new pod before the flip);
- effect_twice / effect_missing: with `effects` (rows of an exactly-once effect per job id,
  read from the shard: ctx.once scenarios), acknowledged jobs whose effect was written more
  than once / never (duplicate runs are allowed there; duplicate effects never);
- notes: what the scenario itself saw go wrong (a recovery command that failed, a move
  record left behind); each is a failure.
The verdict is PASS when every target holds: no lost, stranded, unexpected, zombie rerun,
at_most_once run twice, slow exit, costly poison, held job, misplaced run or note;
duplicates and overlaps fail only in scenarios that do not admit them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.chaos.ledger import Event


@dataclass(frozen=True)
class Observation:
    events: Sequence[Event]
    inflight_first: frozenset[str] = frozenset()
    inflight_last: frozenset[str] = frozenset()
    alive_pids: frozenset[int] = frozenset()
    #: worker id reaped during a pause -> time.monotonic() when its process was resumed
    zombie_reaped: Mapping[str, float] = field(default_factory=dict)
    exit_times: Sequence[float] = ()
    exit_limit: float | None = None
    dead_writes: int = 0
    dead_malformed: int = 0
    allow_duplicates: bool = False
    allow_overlap: bool = False
    held: frozenset[str] = frozenset()
    pod_of_pid: Mapping[int, str] = field(default_factory=dict)
    placement: Sequence[tuple[float, str | None]] = ()
    placed: frozenset[str] = frozenset()  # the ids `placement` is about (empty: all)
    notes: Sequence[str] = ()
    #: job id -> effect rows it left (None: the scenario has no exactly-once effect)
    effects: Mapping[str, int] | None = None


@dataclass
class Report:
    acknowledged: int = 0
    lost: int = 0
    twice: int = 0
    overlapping: int = 0
    amo_twice: int = 0
    stranded: int = 0
    unexpected: int = 0
    zombie_reruns: int = 0
    poison: int = 0
    poison_bad: int = 0
    held: int = 0
    misplaced: int = 0
    effect_twice: int = 0
    effect_missing: int = 0
    exit_times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "PASS" if not self.failures else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def _runs(events: Sequence[Event]) -> dict[str, list[tuple[float, float | None]]]:
    """Per job id: (start, finish or None) of each run; a finish closes its pid's open run."""
    open_runs: dict[tuple[str, int], list[int]] = defaultdict(list)
    runs: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for e in events:
        if e.kind == "start":
            runs[e.job_id].append((e.mono, None))
            open_runs[(e.job_id, e.pid)].append(len(runs[e.job_id]) - 1)
        elif e.kind == "finish" and open_runs[(e.job_id, e.pid)]:
            i = open_runs[(e.job_id, e.pid)].pop(0)
            runs[e.job_id][i] = (runs[e.job_id][i][0], e.mono)
    return runs


def _intersect(runs: list[tuple[float, float | None]]) -> bool:
    done = sorted((s, f) for s, f in runs if f is not None)
    return any(b[0] < a[1] for a, b in zip(done, done[1:], strict=False))


def _misplaced(obs: Observation) -> list[str]:
    """Ids of runs that started on a pod the placement did not allow at that time."""
    if not obs.placement:
        return []
    starts = [t for t, _ in obs.placement]
    out = set()
    for e in obs.events:
        pod = obs.pod_of_pid.get(e.pid)
        if e.kind != "start" or pod is None or (obs.placed and e.job_id not in obs.placed):
            continue
        i = bisect_right(starts, e.wall) - 1
        if i < 0 or obs.placement[i][1] != pod:
            out.add(e.job_id)
    return sorted(out)


def check(obs: Observation) -> Report:
    ev = obs.events
    acked = {e.job_id for e in ev if e.kind == "enq" and e.ok}
    sent = {e.job_id for e in ev if e.kind == "enq"}
    poison = {e.job_id for e in ev if e.kind == "poison"}
    finishes: dict[str, int] = defaultdict(int)
    starts: dict[str, list[Event]] = defaultdict(list)
    amo = set()
    for e in ev:
        if e.kind == "finish":
            finishes[e.job_id] += 1
        elif e.kind == "start":
            starts[e.job_id].append(e)
            if e.amo:
                amo.add(e.job_id)
    runs = _runs(ev)
    r = Report(acknowledged=len(acked), poison=len(poison), exit_times=list(obs.exit_times))

    lost = sorted(i for i in acked if not finishes.get(i) and not (i in amo and starts.get(i)))
    twice = sorted(i for i, n in finishes.items() if n > 1 and i not in poison)
    overlapping = sorted(i for i in starts if i not in poison and (
        any(s.overlap for s in starts[i]) or _intersect(runs[i])))
    amo_twice = sorted(i for i in amo if len(starts[i]) > 1)
    running = {e.job_id for e in ev if e.kind == "start" and e.pid in obs.alive_pids
               and any(f is None for _, f in runs[e.job_id])}
    stranded = sorted((obs.inflight_first & obs.inflight_last) - running)
    unexpected = sorted(i for i in finishes if i not in sent and i not in poison)
    reaped = obs.zombie_reaped
    zombie = sorted({e.job_id for e in ev if e.kind == "start" and e.worker in reaped
                     and (e.claimed or e.mono) >= reaped[e.worker]})
    poison_ran = sorted(i for i in poison if starts.get(i))
    r.lost, r.twice, r.overlapping, r.amo_twice = len(lost), len(twice), len(overlapping), len(amo_twice)
    r.stranded, r.unexpected, r.zombie_reruns = len(stranded), len(unexpected), len(zombie)
    misplaced = _misplaced(obs)
    r.held, r.misplaced = len(obs.held), len(misplaced)
    if poison:
        bad = len(poison) - min(obs.dead_writes, obs.dead_malformed)
        r.poison_bad = max(bad, abs(obs.dead_writes - len(poison))) + len(poison_ran)
    effect_twice: list[str] = []
    effect_missing: list[str] = []
    if obs.effects is not None:
        effect_twice = sorted(i for i, n in obs.effects.items() if n > 1)
        effect_missing = sorted(i for i in acked if not obs.effects.get(i))
        r.effect_twice, r.effect_missing = len(effect_twice), len(effect_missing)
    for name, ids in (("lost", lost), ("twice", twice), ("overlapping", overlapping),
                      ("amo_twice", amo_twice), ("stranded", stranded),
                      ("unexpected", unexpected), ("zombie_reruns", zombie),
                      ("poison_ran", poison_ran), ("held", sorted(obs.held)),
                      ("misplaced", misplaced), ("effect_twice", effect_twice),
                      ("effect_missing", effect_missing)):
        if ids:
            r.examples[name] = ids[:5]

    fails = r.failures
    for name, n in (("lost", r.lost), ("stranded", r.stranded), ("unexpected", r.unexpected),
                    ("at_most_once run twice", r.amo_twice), ("zombie re-runs", r.zombie_reruns),
                    ("held or staged at the end", r.held),
                    ("runs on a pod the tenant was not placed on", r.misplaced),
                    ("effects done twice", r.effect_twice),
                    ("effects never done", r.effect_missing)):
        if n:
            fails.append(f"{name}: {n}")
    if not obs.allow_duplicates:
        if r.twice:
            fails.append(f"finished twice: {r.twice} (this fault admits no duplicate)")
    if r.overlapping and not obs.allow_overlap:
        fails.append(f"overlapping runs: {r.overlapping} (two runs of one job at once)")
    if obs.exit_limit is not None:
        slow = [t for t in obs.exit_times if t > obs.exit_limit]
        if slow:
            fails.append(f"worker exits over {obs.exit_limit:.0f} s: "
                         + ", ".join(f"{t:.1f} s" for t in slow))
    if poison:
        if obs.dead_writes != len(poison) or obs.dead_malformed != len(poison):
            fails.append(f"poisoned entries: {len(poison)}, dead-set writes {obs.dead_writes}, "
                         f"reason malformed {obs.dead_malformed} (want one each)")
        if poison_ran:
            fails.append(f"poisoned entries that ran: {len(poison_ran)}")
    fails.extend(obs.notes)
    return r
