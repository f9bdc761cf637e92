"""Periodic jobs, the part every process needs: `@podjobs.periodic(cron, ...)` (beside
`@podjobs.job`), the registry of periodic specs and the cron maths. The leader's duty
that enqueues the ticks is `podjobs.scheduler.periodic.PeriodicDuty`.

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
   `missed` is counted up to `MISSED_COUNT_LIMIT`. `marker_ttl` is how long the
   leader's dedupe marker of a tick lives; `choose_pod` picks the pod of a spec
   that is not per_pod.

croniter is imported on first use (defining a periodic job), not by `import podjobs`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

from podjobs.errors import ConfigurationError
from podjobs.jobs import Job, JobDef
from podjobs.jobs import job as make_job

if TYPE_CHECKING:
    from croniter import croniter as Croniter

    from podjobs.context import Context

CatchUp = Literal["skip", "once"]
CATCH_UP: tuple[str, ...] = ("skip", "once")
#: shortest life of a dedupe marker, seconds
MARKER_TTL_MIN = 24 * 3600.0
#: missed ticks are counted up to this many (counting walks the cron)
MISSED_COUNT_LIMIT = 1000


def _croniter(cron: str, start: datetime) -> Croniter:
    from croniter import croniter

    return croniter(cron, start)


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


def at_utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def check_cron(cron: object) -> str:
    """The expression if croniter accepts it and it ever fires, else `ConfigurationError`."""
    if not isinstance(cron, str) or not cron.strip():
        raise ConfigurationError(f"periodic job cron expression {cron!r} is empty or not a string")
    expr = " ".join(cron.split())
    from croniter import CroniterBadDateError

    try:
        _croniter(expr, at_utc(0)).get_next(float)
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
    return int(_croniter(cron, at_utc(math.floor(now) + 1)).get_prev(float))


def next_tick(cron: str, after: float) -> int:
    """The first tick strictly after `after`."""
    return int(_croniter(cron, at_utc(math.floor(after))).get_next(float))


def count_ticks(cron: str, after: int, until: int, limit: int = MISSED_COUNT_LIMIT) -> int:
    """How many ticks lie in (after, until], counting at most `limit`."""
    it = _croniter(cron, at_utc(after))
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
