"""Periodic jobs: `@podjobs.periodic(cron, ...)` and the scheduler duty that enqueues
each cron tick exactly once (per pod where `per_pod`), also across a change of leader.

1. The decorator. `@podjobs.periodic("*/5 * * * *", per_pod=True)` on a function
   registers it as a job (`podjobs.job`, so it runs like any other job and can
   also be enqueued by hand) and records a `PeriodicSpec` (`registered()`). It
   also takes an existing job: `periodic("0 3 * * *")(some_jobdef)` or a
   `podjobs.Job` subclass. The cron expression is checked at decoration time
   (croniter; 5 fields, or 6 with seconds as the 6th, e.g. "* * * * * */10"
   = every 10 s; "@hourly" and friends); a bad one raises `ConfigurationError`
   naming it. Cron times are UTC. A periodic job takes no arguments (besides
   `ctx`); it reads its tick from `ctx.payload["periodic"]`:
   `{"tick": epoch seconds, "missed": n, "cron": "..."}` (or `tick_of(ctx)`).

2. The tick logic, pure (`decide`): from the cron, the last tick enqueued (the
   state), now, the catch-up policy and the grace:
   - first sight (no state): remember the latest tick <= now, enqueue nothing;
     the first run is at the next tick (so deploying a new periodic job, or a
     new pod appearing, never fires a tick that was due before it existed);
   - no tick since the last one: nothing;
   - ticks due: the one enqueued is always the latest due tick (never one job
     per missed tick), with `missed` = the due ticks folded into it;
     `catch_up="skip"` enqueues it only if it is at most `grace` seconds late
     (also when it is the only one due: a daily job whose tick passed hours
     ago while no scheduler ran is skipped, that is what "skip" means), and
     `catch_up="once"` enqueues it however late it is;
   - either way the state advances to the latest due tick.
   `missed` is counted up to `MISSED_COUNT_LIMIT`.

3. `PeriodicDuty(zk, router, specs=None, clock=time.time)`, a scheduler `Duty`:
   on each scheduler tick, for each spec and each target it decides as above
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
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

import redis
from croniter import CroniterBadDateError, croniter

from podjobs import keys
from podjobs.errors import BackendUnavailable, ConfigurationError
from podjobs.jobs import Job, JobDef
from podjobs.jobs import job as make_job
from podjobs.payload import dumps, encode

if TYPE_CHECKING:
    from podjobs.context import Context
    from podjobs.pods.router import Router
    from podjobs.pods.zk import ZK

    from .leader import Term

log = logging.getLogger(__name__)

CatchUp = Literal["skip", "once"]
CATCH_UP: tuple[str, ...] = ("skip", "once")
#: state node target name of a spec that is not per_pod
ONE_TARGET = "_one"
#: shortest life of a dedupe marker, seconds
MARKER_TTL_MIN = 24 * 3600.0
#: missed ticks are counted up to this many (counting walks the cron)
MISSED_COUNT_LIMIT = 1000


# -- specs and the decorator -------------------------------------------------------------


@dataclass(frozen=True)
class PeriodicSpec:
    """A job the leader enqueues on a cron schedule (see the module docstring)."""

    job: JobDef
    cron: str
    per_pod: bool = False
    catch_up: str = "skip"
    grace: float = 60.0

    @property
    def name(self) -> str:
        return self.job.name


_specs: dict[str, PeriodicSpec] = {}
_specs_lock = threading.Lock()


def registered() -> dict[str, PeriodicSpec]:
    """Every periodic job registered in this process, by job name."""
    with _specs_lock:
        return dict(_specs)


def unregister(name: str) -> None:
    """Forget a periodic spec (the job itself stays registered)."""
    with _specs_lock:
        _specs.pop(name, None)


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def check_cron(cron: object) -> str:
    """The expression if croniter accepts it and it ever fires, else `ConfigurationError`."""
    if not isinstance(cron, str) or not cron.strip():
        raise ConfigurationError(f"periodic job cron expression {cron!r} is empty or not a string")
    expr = " ".join(cron.split())
    try:
        croniter(expr, _at(0)).get_next(float)
    except CroniterBadDateError:
        raise ConfigurationError(
            f"periodic job cron expression {cron!r} never fires (no such date)") from None
    except (ValueError, KeyError, TypeError) as exc:  # croniter's errors are ValueErrors
        raise ConfigurationError(
            f"periodic job cron expression {cron!r} is not valid ({exc}); use 5 fields "
            f"'minute hour day-of-month month day-of-week' (e.g. '*/5 * * * *'), or a 6th "
            f"field for seconds ('* * * * * */10')") from None
    return expr


def make_spec(job: JobDef, cron: str, *, per_pod: bool = False, catch_up: str = "skip",
              grace: float = 60.0) -> PeriodicSpec:
    """A checked PeriodicSpec (not registered); `ConfigurationError` on a bad setting."""
    expr = check_cron(cron)
    if catch_up not in CATCH_UP:
        raise ConfigurationError(
            f"periodic job {job.name!r}: catch_up={catch_up!r} is not one of {list(CATCH_UP)}")
    if not isinstance(grace, int | float) or math.isnan(grace) or grace < 0:
        raise ConfigurationError(f"periodic job {job.name!r}: grace={grace!r} must be seconds >= 0")
    why = job.arguments_fit((), {})
    if why is not None:
        raise ConfigurationError(
            f"periodic job {job.name!r} must be callable without arguments (it gets only ctx; "
            f"read the tick from ctx.payload['periodic']): {why}")
    return PeriodicSpec(job, expr, bool(per_pod), catch_up, float(grace))


J = TypeVar("J", bound=Job)


class PeriodicDecorator(Protocol):
    """What `periodic(...)` returns: a JobDef or Job class comes back as is, a function
    comes back as its new JobDef."""

    @overload
    def __call__(self, target: JobDef) -> JobDef: ...

    @overload
    def __call__(self, target: type[J]) -> type[J]: ...

    @overload
    def __call__(self, target: Callable[..., Any]) -> JobDef: ...


def periodic(cron: str, *, per_pod: bool = False, catch_up: CatchUp = "skip",
             grace: float = 60.0, queue: str | None = None, name: str | None = None,
             **job_options: Any) -> PeriodicDecorator:
    """Run a job on a cron schedule (UTC), enqueued by the leading scheduler.

        @podjobs.periodic("*/5 * * * *", per_pod=True)
        def reconcile(ctx): ...

    `per_pod`: once per tick on every active pod (else once per tick on one pod);
    `catch_up`: "skip" (a tick more than `grace` seconds late is not run) or
    "once" (after missed ticks, run once for the latest). `queue`, `name` and
    other `@podjobs.job` options (`retries`, `timeout`, ...) apply to the job it
    registers. Also takes an existing job (a JobDef or a `podjobs.Job` subclass);
    its options are then its own. Returns what it was given, or the new JobDef.
    """
    check_cron(cron)

    def wrap(target: Any) -> Any:
        if isinstance(target, JobDef) or (isinstance(target, type) and issubclass(target, Job)):
            if queue is not None or name is not None or job_options:
                raise ConfigurationError(
                    "periodic(...) on an existing job takes no job options (queue, name, ...); "
                    "set them where the job is defined")
            jd = target if isinstance(target, JobDef) else getattr(target, "definition", None)
            if jd is None:
                raise ConfigurationError(f"{target!r} has no perform method, so it is not a job")
            result = target
        elif callable(target):
            jd = make_job(target, name=name, queue=queue or "default", **job_options)
            result = jd
        else:
            raise ConfigurationError(f"periodic(...) decorates a function or a job, not {target!r}")
        spec = make_spec(jd, cron, per_pod=per_pod, catch_up=catch_up, grace=grace)
        with _specs_lock:
            _specs[jd.name] = spec
        return result

    return wrap


def tick_of(ctx: Context) -> dict[str, Any] | None:
    """{"tick", "missed", "cron"} of a periodic run (None for a job enqueued by hand)."""
    info = ctx.payload.get("periodic")
    return info if isinstance(info, dict) else None


# -- the tick logic (pure) -------------------------------------------------------------


def latest_tick(cron: str, now: float) -> int:
    """The latest tick at or before `now` (epoch seconds, UTC)."""
    return int(croniter(cron, _at(math.floor(now) + 1)).get_prev(float))


def next_tick(cron: str, after: float) -> int:
    """The first tick strictly after `after`."""
    return int(croniter(cron, _at(math.floor(after))).get_next(float))


def count_ticks(cron: str, after: int, until: int, limit: int = MISSED_COUNT_LIMIT) -> int:
    """How many ticks lie in (after, until], counting at most `limit`."""
    it = croniter(cron, _at(after))
    n = 0
    while n < limit and it.get_next(float) <= until:
        n += 1
    return n


@dataclass(frozen=True)
class Decision:
    """What to do for one spec and target now."""

    #: the tick to enqueue now, or None
    enqueue: int | None
    #: due ticks not run on their own: folded into `enqueue`, or all skipped
    missed: int
    #: the state after this decision (None only when there is no tick at all)
    last_tick: int | None
    #: ticks due since the last one (0 on first sight)
    due: int = 0
    #: seconds between the latest due tick and now
    late: float = 0.0

    @property
    def first_sight(self) -> bool:
        return self.due == 0 and self.enqueue is None and self.missed == 0


def decide(cron: str, last_tick: int | None, now: float, catch_up: str = "skip",
           grace: float = 60.0) -> Decision:
    """Which tick (if any) to enqueue now; see the module docstring for the rules."""
    latest = latest_tick(cron, now)
    if last_tick is None:
        return Decision(None, 0, latest)
    if latest <= last_tick:  # nothing new (or the clock went back): keep the state
        return Decision(None, 0, last_tick)
    due = count_ticks(cron, last_tick, latest)
    late = now - latest
    if catch_up == "once" or late <= grace:
        return Decision(latest, due - 1, latest, due, late)
    return Decision(None, due, latest, due, late)


def marker_ttl(cron: str, tick: int, minimum: float = MARKER_TTL_MIN) -> float:
    """Seconds a dedupe marker lives: a leader may retry `tick` until the next tick."""
    return max(minimum, 2.0 * (next_tick(cron, tick) - tick))


def choose_pod(recorded: str | None, active: Sequence[str]) -> str | None:
    """The pod of a spec that is not per_pod: the recorded one while active, else the
    first active pod by name (None when no pod is active)."""
    if recorded is not None and recorded in active:
        return recorded
    return min(active) if active else None


def state_path(zk: ZK, job_name: str, target: str) -> str:
    """periodic/{job}/{target} ('/' in a job name is escaped)."""
    from . import paths  # not at import time: `import podjobs` does not need kazoo

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
            except (BackendUnavailable, redis.RedisError) as exc:
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
        from kazoo.exceptions import RolledBackError

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
    return "-" if t is None else _at(t).strftime("%Y-%m-%dT%H:%M:%SZ")
