"""Periodic jobs, the leader's duty: `PeriodicDuty` enqueues each cron tick of the
specs registered with `@podjobs.periodic` (podjobs/cron.py: the decorator, the registry
and the pure tick logic `decide`) exactly once (per pod where `per_pod`), also across a
change of leader.

1. `PeriodicDuty(zk, router, specs=None, clock=time.time)`, a scheduler `Duty`:
   on each scheduler tick, for each spec and each target it decides with `podjobs.cron.decide`
   from the ZooKeeper state node `periodic/{job}/{target}` ({"last_tick"}).
   Targets: every active pod when `per_pod` (node per pod); otherwise one pod,
   node `periodic/{job}/_one` ({"last_tick", "pod"}): the pod recorded there
   while it stays active, else the first active pod by name (then recorded).

Exactly once per tick and target, also when the leader changes:

    1. term.check(); enqueue on the pod's Redis with a dedupe marker
       pj:periodic:{job}:{tick} (SET NX with a TTL in the same Lua script as the
       push: the existing unique-enqueue path). The marker is not in the payload,
       so the job's ack does not release it; it expires after
       max(1 day, 2 x the gap to the next tick).
    2. Advance the state node in `term.transaction()` (create, or set at the
       version read): it commits only while this leader's election node exists,
       so a deposed leader's write fails on the server.

A leader that dies between 1 and 2 leaves the state behind: the next leader
decides the same tick again, and the marker refuses the second enqueue (counted
as `refused`) before the state advances. A deposed leader that does not know it
yet may still do step 1 for a tick the new leader also does: the marker again
keeps it to one job. A pod whose Redis cannot be reached is skipped with a
warning (its state does not advance, so the tick is tried again next time; with
"skip" only until it is `grace` late); the other pods go on.

Residual case (not per_pod only): if the recorded pod stops being active exactly
between steps 1 and 2, the next leader enqueues that tick on another pod.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from podjobs import keys
from podjobs.cron import (
    MARKER_TTL_MIN,
    PeriodicSpec,
    at_utc,
    choose_pod,
    decide,
    marker_ttl,
    registered,
)
from podjobs.errors import BackendUnavailable
from podjobs.gateway import RedisError
from podjobs.payload import dumps, encode

if TYPE_CHECKING:
    from podjobs.pods.router import Router
    from podjobs.pods.zk import ZK

    from .leader import Term

log = logging.getLogger(__name__)

#: state node target name of a spec that is not per_pod
ONE_TARGET = "_one"


def state_path(zk: ZK, job_name: str, target: str) -> str:
    """periodic/{job}/{target} ('/' in a job name is escaped)."""
    from . import paths  # not at import time: kazoo only when the duty runs

    return paths.periodic(zk, job_name.replace("/", "%2F"), target)


# -- the duty ----------------------------------------------------------------------------


class PeriodicDuty:
    """The scheduler duty that enqueues periodic jobs (see the module docstring).

    `stats` counts: enqueued, refused (a tick a previous leader already enqueued),
    skipped (late ticks not run), unreachable (a pod's Redis down), conflicts
    (state changed under us), first_sight.
    """

    name = "periodic"

    def __init__(self, zk: ZK, router: Router, specs: Iterable[PeriodicSpec] | None = None,
                 clock: Callable[[], float] = time.time,
                 marker_ttl_min: float = MARKER_TTL_MIN) -> None:
        self.zk = zk
        self.router = router
        self._specs = list(specs) if specs is not None else None
        self.clock = clock
        self.marker_ttl_min = marker_ttl_min
        self.stats: Counter[str] = Counter()

    def specs(self) -> list[PeriodicSpec]:
        """The given specs, else every registered one (read on each tick)."""
        if self._specs is not None:
            return list(self._specs)
        return sorted(registered().values(), key=lambda s: s.name)

    def tick(self, term: Term) -> None:
        specs = self.specs()
        if not specs:
            return
        term.check()
        now = self.clock()
        active = self.router.active_pods()
        work: list[tuple[PeriodicSpec, str, str]] = []
        for spec in specs:
            targets = active if spec.per_pod else [ONE_TARGET]
            work.extend((spec, t, state_path(self.zk, spec.name, t)) for t in targets)
        states = self.zk.get_many_json(p for _, _, p in work)
        for spec, target, path in work:
            got = states.get(path)
            if isinstance(got, ValueError):
                log.warning("periodic %s: %s; starting it over", spec.name, got)
                state, version = None, -1
            elif got is None:
                state, version = None, None
            else:
                state, version = got
            self._one(term, spec, target, path, state, version, now, active)

    def _one(self, term: Term, spec: PeriodicSpec, target: str, path: str,
             state: dict[str, Any] | None, version: int | None, now: float,
             active: list[str]) -> None:
        last = state.get("last_tick") if state else None
        last_tick = int(last) if isinstance(last, int | float) else None
        recorded = state.get("pod") if state else None
        pod = target if spec.per_pod else choose_pod(recorded if isinstance(recorded, str) else None,
                                                    active)
        if pod is None:
            return  # no active pod: nothing to run on; the state waits
        d = decide(spec.cron, last_tick, now, spec.catch_up, spec.grace)
        if d.enqueue is not None:
            term.check()
            try:
                self._enqueue(spec, pod, d.enqueue, d.missed)
            except (BackendUnavailable, RedisError) as exc:
                self.stats["unreachable"] += 1
                log.warning("periodic %s: pod %s unreachable, tick %s not enqueued (tried again "
                            "next time): %s", spec.name, pod, _iso(d.enqueue), exc)
                return
        elif d.due:
            self.stats["skipped"] += d.due
            log.warning("periodic %s on %s: %d tick(s) up to %s skipped (%.0f s late, grace %g s)",
                        spec.name, pod, d.due, _iso(d.last_tick), d.late, spec.grace)
        elif last_tick is None:
            self.stats["first_sight"] += 1
        new: dict[str, Any] = {"last_tick": d.last_tick}
        if not spec.per_pod:
            new["pod"] = pod
        if state is not None and all(state.get(k) == v for k, v in new.items()):
            return
        self._advance(term, path, new, version)

    def _enqueue(self, spec: PeriodicSpec, pod: str, tick: int, missed: int) -> bool:
        """Enqueue one run for `tick` on `pod` unless its marker exists; True if written."""
        backend = self.router.backend(pod)
        p = spec.job.call().payload(time.time_ns() // 1_000_000, None, pod)
        p.pop("unique", None)  # the tick marker dedupes; an ack must not release anything
        p["periodic"] = {"tick": tick, "missed": missed, "cron": spec.cron}
        ttl_ms = int(marker_ttl(spec.cron, tick, self.marker_ttl_min) * 1000)
        n = backend.enqueue(spec.job.options.queue, [encode(p)],
                            unique=(keys.periodic(spec.name, tick), ttl_ms, p["id"]))
        if n:
            self.stats["enqueued"] += 1
            log.info("periodic %s: tick %s enqueued on %s as %s%s", spec.name, _iso(tick), pod,
                     p["id"], f" ({missed} missed)" if missed else "")
        else:
            self.stats["refused"] += 1
            log.info("periodic %s: tick %s was already enqueued on %s (an earlier leader)",
                     spec.name, _iso(tick), pod)
        return bool(n)

    def _advance(self, term: Term, path: str, new: dict[str, Any], version: int | None) -> bool:
        """Write the state in the term's transaction; NotLeader if our term ended."""
        from podjobs.pods.zk import RolledBackError

        from .leader import NotLeader

        data = dumps(dict(sorted(new.items()))).encode()
        txn = term.transaction()
        if version is None:
            for parent in self._missing_parents(path):
                txn.create(parent, b"")
            txn.create(path, data)
        else:
            txn.set_data(path, data, version=version)
        results = txn.commit()
        if isinstance(results[0], Exception) and not isinstance(results[0], RolledBackError):
            raise NotLeader(f"periodic: state {path} not advanced: this scheduler's election "
                            f"node is gone (term {term.fence})")
        errors = [r for r in results[1:] if isinstance(r, Exception)
                  and not isinstance(r, RolledBackError)]
        if errors:
            self.stats["conflicts"] += 1
            log.warning("periodic: state %s changed under us (%r); read again next tick", path,
                        errors[0])
            return False
        return True

    def _missing_parents(self, path: str) -> list[str]:
        missing: list[str] = []
        parent = path.rsplit("/", 1)[0]
        while parent and not self.zk.exists(parent):
            missing.append(parent)
            parent = parent.rsplit("/", 1)[0]
        return list(reversed(missing))


def _iso(t: int | None) -> str:
    return "-" if t is None else at_utc(t).strftime("%Y-%m-%dT%H:%M:%SZ")
