"""`IterationJob`: a long job written as an enumerator plus a per-item step, and the
run loop that makes it interruptible, resumable and visible.

1. A subclass defines `build_enumerator(ctx, cursor, *args, **kwargs)` (an iterable of
   `(item, cursor_after_item)`, see enumerators.py) and `each_iteration(ctx, item, *args,
   **kwargs)`; it is registered as a job like any `podjobs.Job` subclass and enqueued with
   the arguments of `build_enumerator` after `cursor`.
2. The run loop (`run_iteration`) asks the store whether the delivery runs (`start`:
   finished, cancelled and parked jobs do not), resumes from the last checkpoint, and after
   each item saves a checkpoint when one is due (`checkpoint_every` items,
   `checkpoint_interval` seconds). A checkpoint commits `ctx.db` first, so the shard
   never lags behind the cursor: after a crash at most one checkpoint interval is redone.
3. At each item boundary it stops when asked: worker shutdown (`ctx.stopping`), the
   job's `max_runtime`, a throttle (`throttle_on`) → checkpoint and `Reenqueue` with the
   cursor (a resume, not a retry: the attempt count stays); an operator's pause → parked
   in Redis with its cursor; a cancel → cancelled.
4. An exception retries the job with backoff from its last checkpoint (state `errored`).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, NamedTuple

from podjobs.context import Context
from podjobs.ids import new_id
from podjobs.invoke import Reenqueue, Unfinished
from podjobs.iteration.state import checkpoint_due
from podjobs.iteration.store import MemoryStore, RedisStore, Store
from podjobs.iteration.unfinished import IterationUnfinished
from podjobs.jobs import Job, JobHandle
from podjobs.middleware import add_middleware
from podjobs.payload import encode

log = logging.getLogger("podjobs.iteration")

#: seconds between checks for a pause or cancel when no checkpoint is written meanwhile
CONTROL_POLL_S = 1.0
#: ctx.extras key under which a test or an inline run puts the Store to use
STORE_EXTRA = "podjobs.iteration.store"
#: stop reasons of a run that is put back on its queue
SHUTDOWN, MAX_RUNTIME, THROTTLED, LIMIT = "shutdown", "max_runtime", "throttled", "limit"


class Throttle(NamedTuple):
    """Stop and come back after `backoff` seconds while `check(ctx)` is true."""

    check: Callable[[Context], bool]
    backoff: float


@dataclass
class RunResult:
    """How one run ended: succeeded | interrupted | paused | cancelled | superseded (another
    run of the job took over), or the store's decision not to run (paused, cancelled,
    succeeded). `items`: processed in this run; `done`: in all runs, as last checkpointed."""

    state: str
    items: int = 0
    cursor: Any = None
    done: int = 0
    reason: str = ""
    #: False when the store decided the delivery does not run (the job is paused, cancelled
    #: or finished already)
    ran: bool = True


class _Superseded(Exception):
    """Another run of this job started (this worker was taken for dead): stop quietly."""


class IterationJob(Job):
    """An interruptible, resumable, throttled job over an enumerator.

        class Backfill(IterationJob):
            queue = "low"
            checkpoint_every = 100            # items (or batches) between checkpoints
            max_runtime = 300.0               # seconds per run, then re-enqueued with the cursor

            def build_enumerator(self, ctx, cursor, *, table):
                return enumerators.rows(ctx.db, select(users), users.c.id, cursor)

            def each_iteration(self, ctx, row, *, table):
                ...

        Backfill.throttle_on(lambda ctx: replica_lag() > 5, backoff=30)
        Backfill.enqueue(table="users", tenant="shop-1")
    """

    #: items (or batches) between checkpoints; None or 0: no count-based checkpoints
    checkpoint_every: ClassVar[int | None] = 1
    #: seconds between checkpoints (checked at item boundaries); None: no time-based ones
    checkpoint_interval: ClassVar[float | None] = None
    #: seconds one run may take before it stops and re-enqueues itself; None: no limit
    max_runtime: ClassVar[float | None] = 300.0
    _throttles: ClassVar[list[Throttle]] = []
    #: during a run: the cursor after the last item processed (where a resume would start)
    cursor: Any = None

    def __init_subclass__(cls, **kw: Any) -> None:
        cls._throttles = list(cls._throttles)
        concrete = (cls.build_enumerator is not IterationJob.build_enumerator
                    and cls.each_iteration is not IterationJob.each_iteration)
        if concrete and "perform" not in cls.__dict__:
            cls.perform = _make_perform(cls)  # type: ignore[method-assign]
        super().__init_subclass__(**kw)

    # -- what a subclass writes -----------------------------------------------------

    def build_enumerator(self, ctx: Context, cursor: Any, *args: Any,
                         **kwargs: Any) -> Iterable[tuple[Any, Any]]:
        """The items after `cursor` (None: from the start), as (item, cursor after it)."""
        raise NotImplementedError

    def each_iteration(self, ctx: Context, item: Any, *args: Any, **kwargs: Any) -> None:
        """Process one item (or batch); raise to retry the job from its last checkpoint."""
        raise NotImplementedError

    def on_start(self, ctx: Context, *args: Any, **kwargs: Any) -> None:
        """Before the first item of the first run."""

    def on_resume(self, ctx: Context, *args: Any, **kwargs: Any) -> None:
        """Before the first item of every later run (after an interruption, error or pause)."""

    def on_shutdown(self, ctx: Context, *args: Any, **kwargs: Any) -> None:
        """After a run stopped (interrupted, paused, cancelled or completed) and its state
        was saved; not after an error."""

    def on_complete(self, ctx: Context, *args: Any, **kwargs: Any) -> None:
        """After the last item, before the job is marked succeeded."""

    # -- class helpers --------------------------------------------------------------

    @classmethod
    def throttle_on(cls, check: Callable[..., bool], backoff: float = 30.0) -> None:
        """At each item boundary, if `check(ctx)` (or `check()`) is true, stop and come
        back after `backoff` seconds with the cursor (state `interrupted`, reason
        `throttled`)."""
        if backoff < 0:
            raise ValueError(f"backoff={backoff} must be >= 0")
        takes_ctx = bool(inspect.signature(check).parameters)
        fn: Callable[[Context], bool] = check if takes_ctx else (lambda _ctx: check())
        cls._throttles.append(Throttle(fn, float(backoff)))

    @staticmethod
    def part_range(ctx: Context, start: int, stop: int) -> tuple[int, int]:
        """This run's slice of [start, stop): the part's bounds when the job runs as a part
        of `enqueue_parallel`, else (start, stop)."""
        part = ctx.payload.get("part")
        if isinstance(part, dict) and "start" in part:
            return int(part["start"]), int(part["stop"])
        return start, stop

    @classmethod
    def enqueue(cls, *args: Any, tenant: str | None = None, pod: str | None = None,
                **kwargs: Any) -> JobHandle:
        h = cls.definition.enqueue(*args, tenant=tenant, pod=pod, **kwargs)
        _register(h)
        return h

    @classmethod
    def enqueue_in(cls, delay: float | timedelta, *args: Any, **kwargs: Any) -> JobHandle:
        h = cls.definition.enqueue_in(delay, *args, **kwargs)
        _register(h)
        return h

    @classmethod
    def enqueue_at(cls, when: datetime | float, *args: Any, **kwargs: Any) -> JobHandle:
        h = cls.definition.enqueue_at(when, *args, **kwargs)
        _register(h)
        return h

    @staticmethod
    def part_keys(ctx: Context) -> tuple[Any, Any]:
        """This run's keyset slice (after, until) when the job runs as a part of
        `enqueue_parallel(keyset_parts(...))`, else (None, None): pass them to
        `enumerators.rows`/`batches` as after=, until=."""
        part = ctx.payload.get("part")
        if isinstance(part, dict):
            return part.get("after"), part.get("until")
        return None, None

    @classmethod
    def enqueue_parallel(cls, parts: int | Sequence[dict[str, Any]], *args: Any,
                         span: tuple[int, int] | None = None, then: Any = None,
                         tenant: str | None = None, pod: str | None = None,
                         **kwargs: Any) -> Any:
        """Run the job as parts at once, with one progress view (`podjobs iterations show
        GROUP`) and `then` (a job, a job class or `Job.call(...)`) enqueued once all parts
        succeeded. Returns a `ParallelHandle`.

        - `enqueue_parallel(4, span=(0, n), ...)`: [0, n) in 4 ranges; each part reads its
          range with `part_range(ctx, 0, n)`;
        - `enqueue_parallel(enumerators.keyset_parts(db, select, keys, 4), ...)`: keyset
          slices; each part reads its slice with `part_keys(ctx)`."""
        from podjobs.iteration.parallel import enqueue_parallel

        return enqueue_parallel(cls, parts, args, kwargs, span=span, then=then,
                                tenant=tenant, pod=pod)


def _make_perform(cls: type[IterationJob]) -> Callable[..., Any]:
    def perform(self: IterationJob, ctx: Context, *args: Any, **kwargs: Any) -> None:
        res = run_iteration(self, ctx, list(args), kwargs)
        if res.state != "succeeded" or not res.ran:
            # paused, superseded, cancelled, or a duplicate delivery of a finished job: the
            # delivery is acked, but the job did not succeed in it (no follow-ups, and a
            # tracked job's record is not marked succeeded)
            raise Unfinished(res.state if res.ran or res.state != "succeeded" else "duplicate")

    params = list(inspect.signature(cls.build_enumerator).parameters.values())[3:]  # self, ctx, cursor
    sig = inspect.signature(perform)
    self_p, ctx_p = list(sig.parameters.values())[:2]
    perform.__signature__ = sig.replace(parameters=[self_p, ctx_p, *params])  # type: ignore[attr-defined]
    perform.__qualname__ = f"{cls.__qualname__}.perform"
    return perform


def _register(h: JobHandle) -> None:
    """Record the job as `enqueued` in its pod's Redis (best effort: a worker records it
    when it starts the job anyway)."""
    if not h.enqueued:
        return
    try:
        from podjobs.backend import RedisBackend
        from podjobs.client import get_client
        from podjobs.iteration import iterkeys
        from podjobs.iteration.store import lua_for

        backend = get_client()._target(h.tenant, h.pod).backend
        if isinstance(backend, RedisBackend):
            lua_for(backend).run("iter_register", "record an iteration job",
                                 [iterkeys.job(h.id), iterkeys.INDEX], [h.id, h.job, h.queue, h.tenant or ""])
    except Exception as exc:  # the job is enqueued; only its `enqueued` row is missing
        log.warning("iteration job %s %s was enqueued but not recorded as enqueued: %s",
                    h.job, h.id, exc)


def store_for(ctx: Context) -> Store:
    """The store a run uses: one put in ctx.extras, else the pod's Redis (or its SQL
    database: SqlStore), else memory."""
    s = ctx.extras.get(STORE_EXTRA)
    if s is not None:
        return s  # type: ignore[no-any-return]
    if ctx._backend is not None or ctx.redis_url:
        from podjobs.backend import RedisBackend

        backend = ctx.backend
        if not isinstance(backend, RedisBackend):  # a pod on the SQL backend
            from podjobs.iteration.sqlstore import SqlStore

            return SqlStore(backend)
        return RedisStore(backend)
    s = MemoryStore()
    ctx.extras[STORE_EXTRA] = s
    return s


def run_iteration(job: IterationJob, ctx: Context, args: list[Any], kwargs: dict[str, Any], *,
                  store: Store | None = None, max_items: int | None = None) -> RunResult:
    """Run (or resume) `job` in this thread until it completes or stops (see the module
    docstring). Raises `Reenqueue` when it stops to come back later, and the job's own
    exception when an item fails. `max_items`: stop (as interrupted) after that many items."""
    return _Run(job, ctx, args, kwargs, store or store_for(ctx), max_items).run()


class _Run:
    def __init__(self, job: IterationJob, ctx: Context, args: list[Any], kwargs: dict[str, Any],
                 store: Store, max_items: int | None) -> None:
        self.job, self.ctx, self.args, self.kwargs = job, ctx, args, kwargs
        self.store = store
        self.max_items = max_items
        self.token = new_id()
        self.cursor: Any = None
        self.total: int | None = None
        self.total_sent = False
        #: items processed in this run; of these, `pending` are not in a checkpoint yet
        self.items = 0
        self.pending = 0
        #: items in the store's count (all runs)
        self.saved = 0
        self.control = ""
        self.delay = 0.0
        now = time.monotonic()
        self.t0 = self.last_cp = self.last_contact = now
        cls = type(job)
        self.every, self.interval = cls.checkpoint_every, cls.checkpoint_interval
        self.max_runtime = cls.max_runtime

    def _payload(self, with_cursor: bool) -> str:
        p = dict(self.ctx.payload) or {"id": self.ctx.job_id, "job": self.ctx.job_name,
                                       "queue": self.ctx.queue, "args": self.args,
                                       "kwargs": self.kwargs, "attempt": 0}
        if with_cursor:
            p["cursor"] = self.cursor
        return encode(p, 1 << 30)

    def _result(self, state: str, reason: str = "") -> RunResult:
        return RunResult(state, self.items, self.cursor, self.saved + self.pending, reason)

    def run(self) -> RunResult:
        job, ctx, a, kw = self.job, self.ctx, self.args, self.kwargs
        st = self.store.start(ctx, self.token, self._payload(False))
        if st.decision != "run":
            log.info("iteration job %s %s not run: it is %s", ctx.job_name, ctx.job_id, st.decision)
            return RunResult(st.decision, ran=False)
        self.cursor, self.saved = st.cursor, st.done
        job.cursor = st.cursor
        try:
            (job.on_start if st.first else job.on_resume)(ctx, *a, **kw)
            enum = job.build_enumerator(ctx, self.cursor, *a, **kw)
            total = getattr(enum, "total", None)
            self.total = int(total) if total is not None else None
            it = iter(enum)
            while True:
                why = self._why_stop()
                if why:
                    res = self._stop(why)
                    if res is not None:
                        return res
                    continue
                try:
                    item, after = next(it)
                except StopIteration:
                    break
                job.each_iteration(ctx, item, *a, **kw)
                self.items += 1
                self.pending += 1
                self.cursor = job.cursor = after
                now = time.monotonic()
                if checkpoint_due(self.pending, now - self.last_cp, self.every, self.interval):
                    self._checkpoint()
                elif now - self.last_contact >= CONTROL_POLL_S:
                    self.control = self._answer(self.store.poll(ctx, self.token))
                    self.last_contact = now
            job.on_complete(ctx, *a, **kw)
            self._end(self.store.finish, "succeeded")
            job.on_shutdown(ctx, *a, **kw)
            return self._result("succeeded")
        except _Superseded:
            log.warning("iteration job %s %s: another run took over; this one stops",
                        ctx.job_name, ctx.job_id)
            return self._result("superseded")
        except Reenqueue:
            raise
        except BaseException as exc:
            if not isinstance(exc, KeyboardInterrupt | SystemExit):
                self._record_error(exc)
            raise

    # -- decisions at an item boundary ---------------------------------------------

    def _why_stop(self) -> str:
        if self.control in ("cancel", "pause"):
            return self.control
        if self.ctx.stopping.is_set():
            return SHUTDOWN
        if self.max_items is not None and self.items >= self.max_items:
            return LIMIT
        if self.max_runtime is not None and time.monotonic() - self.t0 >= self.max_runtime:
            return MAX_RUNTIME
        for t in type(self.job)._throttles:
            if t.check(self.ctx):
                self.delay = t.backoff
                return THROTTLED
        return ""

    def _answer(self, reply: str) -> str:
        if reply == "lost":
            raise _Superseded()
        return reply

    def _total(self) -> int | None:
        """The total, sent with the first write only."""
        if self.total is None or self.total_sent:
            return None
        self.total_sent = True
        return self.total

    def _commit(self) -> None:
        """Commit the shard's work before the cursor moves past it."""
        db = self.ctx._db
        if db is not None:
            db.commit()

    def _end(self, write: Callable[..., str], *extra: Any) -> str:
        """One store write carrying the last checkpoint (finish, interrupt, park)."""
        self._commit()
        reply = self._answer(write(self.ctx, self.token, self.cursor, self.pending,
                                   self._total(), *extra))
        return reply

    def _saved_pending(self) -> None:
        self.saved += self.pending
        self.pending = 0

    def _checkpoint(self) -> None:
        reply = self._end(self.store.checkpoint)
        self._saved_pending()
        self.last_cp = self.last_contact = time.monotonic()
        self.control = reply

    # -- ending a run ----------------------------------------------------------------

    def _stop(self, why: str) -> RunResult | None:
        """Stop at this boundary; None when there is nothing to stop for after all."""
        job, ctx, a, kw = self.job, self.ctx, self.args, self.kwargs
        if why == "cancel":
            self._end(self.store.finish, "cancelled")
            self._saved_pending()
            job.on_shutdown(ctx, *a, **kw)
            log.info("iteration job %s %s cancelled at cursor %r", ctx.job_name, ctx.job_id,
                     self.cursor)
            return self._result("cancelled", "cancelled")
        if why == "pause":
            reply = self._end(self.store.park, self._payload(True))
            if reply != "parked":  # the pause was withdrawn meanwhile, or became a cancel
                self.total_sent = False
                self.control = reply
                return self._stop(reply) if reply else None
            self._saved_pending()
            job.on_shutdown(ctx, *a, **kw)
            log.info("iteration job %s %s paused at cursor %r", ctx.job_name, ctx.job_id,
                     self.cursor)
            return self._result("paused", "paused")
        self._end(self.store.interrupt, why)
        self._saved_pending()
        job.on_shutdown(ctx, *a, **kw)
        delay = self.delay if why == THROTTLED else 0.0
        log.info("iteration job %s %s interrupted (%s) at cursor %r after %d items; re-enqueued%s",
                 ctx.job_name, ctx.job_id, why, self.cursor, self.items,
                 f" in {delay:g} s" if delay else "")
        raise Reenqueue(delay=delay, reason=why,
                        updates={"cursor": self.cursor, "iter": {"done": self.saved, "reason": why}})

    def _record_error(self, exc: BaseException) -> None:
        # With ctx.db in use, items since the last checkpoint are rolled back with the job:
        # keep the last checkpoint. Without it, what was done is done: save the progress.
        keep = self.ctx._db is not None or self.pending == 0
        try:
            self.store.error(self.ctx, self.token, self.cursor, self.pending,
                             f"{type(exc).__qualname__}: {exc}", keep)
        except Exception as store_exc:  # the job's own error matters more
            log.warning("iteration job %s %s: could not record its error: %s",
                        self.ctx.job_name, self.ctx.job_id, store_exc)


#: a cancelled iteration job releases its unique key (see podjobs.iteration.unfinished)
add_middleware(IterationUnfinished())
