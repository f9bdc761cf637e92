"""Job definitions: the `@job` decorator, the `Job` class form, the registry,
and `Call` (a job with its arguments, possibly chained to follow-ups).

1. `@podjobs.job(...)` turns a function into a `JobDef`; subclassing
   `podjobs.Job` does the same for a class with a `perform` method.
2. Every definition is registered by name (`module.qualname` unless given), so
   a worker importing the app module can find it from a payload.
3. `JobDef.enqueue/enqueue_in/enqueue_at/enqueue_many` build payloads and hand
   them to the client; application code never sees Redis.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, ClassVar

from podjobs import backoff as backoff_mod
from podjobs.client import AFTER_COMMIT, OUTBOX, get_client
from podjobs.client import JobHandle as JobHandle
from podjobs.errors import ConfigurationError, UnknownJob
from podjobs.ids import new_id
from podjobs.payload import check_value
from podjobs.record import Record


class DeliveryMode(str, Enum):
    """at_least_once: acked after it ran, re-run if its worker dies (the default).
    at_most_once: acked before it runs, never re-run, not retried."""

    AT_LEAST_ONCE = "at_least_once"
    AT_MOST_ONCE = "at_most_once"


#: keyword names `enqueue` keeps for routing; a job cannot take parameters with these names
RESERVED_KWARGS = frozenset({"tenant", "pod", "db"})

_registry: dict[str, JobDef] = {}


class JobOptions(Record):
    """A job's options (`@job(...)`).

    - queue; retries: retries after the first run before the job dies (0 = never retried);
      backoff: the delay before each retry; timeout: seconds a run may take before it is
      stopped and retried (None = no limit); delivery: at least once (default) or at most once.
    - unique_for: seconds an identical enqueue (same job, queue, args, kwargs, tenant) is
      refused while one is pending; max_memory_mb: process isolation only: kill the child above
      this resident size (MiB).
    - async_only: never run while a caller waits for it (the HTTP API answers 417 to a
      synchronous request; iteration jobs are asynchronous-only whatever this says); api:
      callable over the HTTP API (`@job(api=True)`; platform jobs never are); api_queues:
      queues an HTTP request may pick besides the job's own (`@job(api={"queues": [...]})`).
    - idempotent: exactly once per key (podjobs.effects): True = per job id, or a function of
      the job's arguments giving the key; the whole run is skipped when a committed run
      recorded it.
    """

    __slots__ = ("queue", "retries", "backoff", "timeout", "delivery", "unique_for",
                 "max_memory_mb", "async_only", "api", "api_queues", "idempotent")

    def __init__(self, queue: str = "default", retries: int = 25,
                 backoff: backoff_mod.Backoff = backoff_mod.exponential,
                 timeout: float | None = None,
                 delivery: DeliveryMode = DeliveryMode.AT_LEAST_ONCE,
                 unique_for: float | None = None, max_memory_mb: float | None = None,
                 async_only: bool = False, api: bool = False, api_queues: tuple[str, ...] = (),
                 idempotent: bool | Callable[..., Any] = False) -> None:
        self.queue = queue
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.delivery = delivery
        self.unique_for = unique_for
        self.max_memory_mb = max_memory_mb
        self.async_only = async_only
        self.api = api
        self.api_queues = api_queues
        self.idempotent = idempotent

    def api_allows(self, queue: str | None) -> bool:
        """Whether an HTTP request may enqueue this job on `queue` (None: the job's own)."""
        return self.api and (queue is None or queue == self.queue or queue in self.api_queues)


class JobDef:
    """A registered job: a callable plus its options."""

    def __init__(self, name: str, fn: Callable[..., Any], options: JobOptions) -> None:
        self.name = name
        self.fn = fn
        self.options = options
        #: the `Job` subclass this definition was made from (None for a function)
        self.job_class: type | None = None
        params = list(inspect.signature(fn).parameters.values())
        self.takes_ctx = bool(params) and params[0].name == "ctx"
        for p in params:
            if p.name in RESERVED_KWARGS:
                raise ConfigurationError(
                    f"job {name!r} has a parameter named {p.name!r}, which enqueue keeps for "
                    f"routing (tenant, pod) and the outbox session (db); rename it and read "
                    f"the tenant from ctx.tenant, the shard's session from ctx.db"
                )
        self._signature = inspect.signature(fn)

    def __repr__(self) -> str:
        return f"<JobDef {self.name} queue={self.options.queue}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the job inline, in this thread, with a local context (for tests and scripts)."""
        from podjobs.context import Context, _set_current

        ctx = Context(new_id(), self.name, 1, self.options.queue, int(time.time() * 1000))
        _set_current(ctx)
        try:
            return self.fn(ctx, *args, **kwargs) if self.takes_ctx else self.fn(*args, **kwargs)
        finally:
            _set_current(None)

    def arguments_fit(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
        """None when the arguments fit the function, else why not."""
        try:
            if self.takes_ctx:
                self._signature.bind(None, *args, **kwargs)
            else:
                self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            return str(exc)
        return None

    # -- building calls -------------------------------------------------------------

    def call(self, *args: Any, **kwargs: Any) -> Call:
        """This job with arguments, to chain (`.then`) or enqueue later."""
        return Call(self, args, kwargs)

    def then(self, other: JobDef | Call, *args: Any, **kwargs: Any) -> Call:
        """Shorthand for `self.call().then(other, ...)` for a job without arguments."""
        return self.call().then(other, *args, **kwargs)

    # -- enqueue --------------------------------------------------------------------

    def enqueue(self, *args: Any, tenant: str | None = None, pod: str | None = None,
                db: Any = None, **kwargs: Any) -> JobHandle:
        """Enqueue now. `tenant=` routes to the tenant's pod; `pod=` names a pod; `db=` (a
        SQLAlchemy session on the tenant's shard) writes it in that session's transaction
        (the outbox, podjobs.transactional)."""
        return Call(self, args, kwargs).enqueue(tenant=tenant, pod=pod, db=db)

    def enqueue_in(self, delay: float | timedelta, *args: Any, tenant: str | None = None,
                   pod: str | None = None, **kwargs: Any) -> JobHandle:
        """Enqueue to run after `delay` seconds (or a timedelta), measured on Redis' clock."""
        return Call(self, args, kwargs).enqueue(tenant=tenant, pod=pod, delay=delay)

    def enqueue_at(self, when: datetime | float, *args: Any, tenant: str | None = None,
                   pod: str | None = None, **kwargs: Any) -> JobHandle:
        """Enqueue to run at `when` (an aware datetime or epoch seconds)."""
        return Call(self, args, kwargs).enqueue(tenant=tenant, pod=pod, at=when)

    def enqueue_many(self, arg_sets: Iterable[Sequence[Any] | Mapping[str, Any] | tuple[Sequence[Any], Mapping[str, Any]]],
                     *, tenant: str | None = None, pod: str | None = None) -> list[JobHandle]:
        """Enqueue many argument sets in one round trip.

        Each item is a list/tuple of positional args, a dict of keyword args, or a
        pair (args, kwargs) given as a 2-tuple whose second item is a dict.
        """
        pairs: list[tuple[Sequence[Any], dict[str, Any]]] = []
        for item in arg_sets:
            if isinstance(item, Mapping):
                pairs.append(((), dict(item)))
            elif (type(item) is tuple and len(item) == 2 and isinstance(item[1], Mapping)
                  and isinstance(item[0], list | tuple)):
                pairs.append((item[0], dict(item[1])))
            else:
                pairs.append((item, {}))
        return get_client().enqueue_many(self, pairs, tenant=tenant, pod=pod)


class Call:
    """A job with its arguments and the follow-ups to run after it succeeds.

    `queue` overrides the job's queue; `track` (seconds) gives the job a status record
    (`podjobs.status`), kept that long after it finished: what the HTTP API's status
    monitors read. Untracked jobs (the default) cost nothing extra."""

    __slots__ = ("job", "args", "kwargs", "followups", "queue", "track")

    def __init__(self, job: JobDef, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
                 followups: list[Call] | None = None, queue: str | None = None,
                 track: int | None = None) -> None:
        self.job = job
        self.args = args
        self.kwargs: dict[str, Any] = {} if kwargs is None else kwargs
        self.followups: list[Call] = [] if followups is None else followups
        self.queue = queue
        self.track = track

    def __eq__(self, other: object) -> bool:
        if type(other) is not Call:
            return NotImplemented
        return (self.job, self.args, self.kwargs, self.followups, self.queue, self.track) == (
            other.job, other.args, other.kwargs, other.followups, other.queue, other.track)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (f"Call(job={self.job!r}, args={self.args!r}, kwargs={self.kwargs!r}, "
                f"followups={self.followups!r}, queue={self.queue!r}, track={self.track!r})")

    @property
    def queue_name(self) -> str:
        return self.queue or self.job.options.queue

    def then(self, other: JobDef | Call, *args: Any, **kwargs: Any) -> Call:
        """Run `other` after the last job of this chain succeeds; returns this chain."""
        nxt = other if isinstance(other, Call) else Call(other, args, kwargs)
        last = self
        while last.followups:
            last = last.followups[-1]
        last.followups.append(nxt)
        return self

    def payload(self, now_ms: int, tenant: str | None = None, pod: str | None = None) -> dict[str, Any]:
        """The payload dict for this call (arguments checked, id fresh)."""
        if self.args:
            check_value(list(self.args), f"job {self.job.name!r} argument")
        if self.kwargs:
            check_value(self.kwargs, f"job {self.job.name!r} keyword argument")
        # "kwargs" only when there are some and "attempt" only after a run: a queued job's
        # payload is as small as it can be (podjobs.payload reads them with their defaults)
        p: dict[str, Any] = {
            "id": new_id(now_ms), "job": self.job.name, "queue": self.queue or self.job.options.queue,
            "args": list(self.args), "enqueued_at": now_ms,
        }
        if self.kwargs:
            p["kwargs"] = self.kwargs
        if tenant is not None:
            p["tenant"] = tenant
        if pod is not None:
            p["pod"] = pod
        if self.job.options.unique_for:
            p["unique"] = self.unique_key(tenant)
        if self.followups:
            p["then"] = [c.payload(now_ms, tenant, pod) for c in self.followups]
        if self.track is not None:
            p["track"] = int(self.track)
        return p

    def tracked(self, keep_s: int = 86400) -> Call:
        """This call with a status record, kept `keep_s` seconds after it finished: what
        `handle.status()`, `handle.cancel()` and `podjobs.find(id)` read; returns self."""
        self.track = int(keep_s)
        return self

    def unique_key(self, tenant: str | None = None) -> str:
        """The key that makes this call unique: job, queue, arguments and tenant (two tenants
        enqueuing the same job with the same arguments do not collide). A call without a
        tenant keeps the digest it always had."""
        from podjobs import keys

        parts: list[Any] = [self.queue or self.job.options.queue, list(self.args), self.kwargs]
        if tenant is not None:
            parts.append({"tenant": tenant})
        canon = json.dumps(parts, sort_keys=True, separators=(",", ":"))
        return keys.unique(self.job.name, hashlib.sha1(canon.encode()).hexdigest())

    def enqueue(self, *, tenant: str | None = None, pod: str | None = None,
                delay: float | timedelta | None = None, at: datetime | float | None = None,
                connection: Any = None, db: Any = None) -> JobHandle:
        """Enqueue this call. `connection=`: a SQLAlchemy Connection in the caller's
        transaction on the SQL backend's database: the job is written in that transaction
        (SQL backend only). `db=` (a SQLAlchemy session on the tenant's shard), or an open
        `with podjobs.outbox(session):` block, writes it into that transaction's outbox
        instead (podjobs.transactional): it leaves for Redis only once the session commits.
        In a `with podjobs.after_commit(session):` block it is enqueued when the session
        commits, dropped on a rollback (podjobs.aftercommit)."""
        if connection is not None:
            return get_client().enqueue_call(self, tenant=tenant, pod=pod, delay=delay, at=at,
                                             connection=connection)
        session = db if db is not None else OUTBOX.get()
        if session is not None:
            from podjobs import transactional  # SQLAlchemy: loaded by the first outbox enqueue

            return transactional.enqueue(session, self, tenant=tenant, pod=pod, delay=delay, at=at)
        later = AFTER_COMMIT.get()
        if later is not None:
            from podjobs import aftercommit  # SQLAlchemy: loaded by the first deferred enqueue

            return aftercommit.defer(later, self, tenant=tenant, pod=pod, delay=delay, at=at)
        return get_client().enqueue_call(self, tenant=tenant, pod=pod, delay=delay, at=at)


def job(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    queue: str = "default",
    retries: int = 25,
    backoff: backoff_mod.Backoff = backoff_mod.exponential,
    timeout: float | None = None,
    delivery: DeliveryMode | str = DeliveryMode.AT_LEAST_ONCE,
    unique_for: float | timedelta | None = None,
    max_memory_mb: float | None = None,
    async_only: bool = False,
    api: bool | Mapping[str, Any] = False,
    idempotent: bool | Callable[..., Any] = False,
) -> Any:
    """Declare a job: `@job` or `@job(queue="low", retries=5, ...)` on a function.

    `api=True` lets tenants enqueue it over the HTTP API on its own queue;
    `api={"queues": ["low", ...]}` also on those queues. Without it the API refuses it.
    `idempotent=True` (or a function of the job's arguments giving a key): the run records
    its key with `ctx.once` in the job's shard transaction and is skipped when a committed
    run already did (podjobs.effects)."""

    def wrap(f: Callable[..., Any]) -> JobDef:
        opts = make_options(queue, retries, backoff, timeout, delivery, unique_for, max_memory_mb,
                            async_only, api, idempotent)
        return register(JobDef(name or f"{f.__module__}.{f.__qualname__}", f, opts))

    return wrap(fn) if fn is not None else wrap


def make_options(queue: str, retries: int, backoff: backoff_mod.Backoff, timeout: float | None,
                 delivery: DeliveryMode | str, unique_for: float | timedelta | None,
                 max_memory_mb: float | None, async_only: bool = False,
                 api: bool | Mapping[str, Any] = False,
                 idempotent: bool | Callable[..., Any] = False) -> JobOptions:
    if not queue or "," in queue or ":" in queue or queue != queue.strip():
        raise ConfigurationError(f"queue name {queue!r} is not allowed: use letters, digits, '-' and '_'")
    try:
        dl = DeliveryMode(delivery)
    except ValueError:
        raise ConfigurationError(
            f"delivery {delivery!r} is not one of {[d.value for d in DeliveryMode]}") from None
    if retries < 0:
        raise ConfigurationError(f"retries={retries} must be >= 0")
    uf = unique_for.total_seconds() if isinstance(unique_for, timedelta) else unique_for
    allowed, api_queues = _api_access(api)
    if not (isinstance(idempotent, bool) or callable(idempotent)):
        raise ConfigurationError(f"idempotent={idempotent!r}: use True (one key per job id) or "
                                 f"a function of the job's arguments returning the key")
    return JobOptions(queue, retries, backoff, timeout, dl, uf, max_memory_mb, bool(async_only),
                      allowed, api_queues, idempotent)


def _api_access(api: bool | Mapping[str, Any]) -> tuple[bool, tuple[str, ...]]:
    if isinstance(api, bool):
        return api, ()
    if isinstance(api, Mapping) and set(api) <= {"queues"}:
        queues = api.get("queues", [])
        if isinstance(queues, list | tuple) and all(isinstance(q, str) and q for q in queues):
            return True, tuple(queues)
    raise ConfigurationError(f"api={api!r}: use api=True, or api={{'queues': ['low', ...]}} for "
                             f"the queues an HTTP request may pick besides the job's own")


def register(jd: JobDef) -> JobDef:
    old = _registry.get(jd.name)
    if old is not None and old.fn is not jd.fn and getattr(old.fn, "__code__", None) is not getattr(jd.fn, "__code__", 0):
        raise ConfigurationError(f"two jobs are named {jd.name!r}; give one an explicit name=")
    _registry[jd.name] = jd
    return jd


def lookup(name: str) -> JobDef:
    try:
        return _registry[name]
    except KeyError:
        raise UnknownJob(
            f"no job named {name!r} is registered in this process; import the module that "
            f"defines it (worker --app MODULE)") from None


def registered() -> dict[str, JobDef]:
    return dict(_registry)


class Job:
    """Class form: subclass, set options as class attributes, define `perform`.

        class Resize(podjobs.Job):
            queue = "low"
            retries = 5
            def perform(self, ctx, image_id): ...

        Resize.enqueue(42)
    """

    queue: ClassVar[str] = "default"
    retries: ClassVar[int] = 25
    backoff: ClassVar[backoff_mod.Backoff] = staticmethod(backoff_mod.exponential)
    timeout: ClassVar[float | None] = None
    delivery: ClassVar[DeliveryMode | str] = DeliveryMode.AT_LEAST_ONCE
    unique_for: ClassVar[float | None] = None
    max_memory_mb: ClassVar[float | None] = None
    async_only: ClassVar[bool] = False
    api: ClassVar[bool | dict[str, Any]] = False
    #: True (one ctx.once key per job id) or a function of perform's arguments (after ctx)
    #: giving the key, e.g. `idempotent = staticmethod(lambda order_id: f"refund:{order_id}")`:
    #: a run is skipped when a committed run with that key did it (see `job(idempotent=)`)
    idempotent: ClassVar[bool | Callable[..., Any]] = False
    job_name: ClassVar[str | None] = None
    definition: ClassVar[JobDef]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "perform" not in cls.__dict__:
            return

        def run(*args: Any, **kwargs: Any) -> Any:
            return cls().perform(*args, **kwargs)

        run.__signature__ = _perform_signature(cls)  # type: ignore[attr-defined]
        opts = make_options(cls.queue, cls.retries, cls.backoff, cls.timeout, cls.delivery,
                            cls.unique_for, cls.max_memory_mb, cls.async_only, cls.api,
                            cls.idempotent)
        jd = JobDef(cls.job_name or f"{cls.__module__}.{cls.__qualname__}", run, opts)
        jd.job_class = cls
        cls.definition = register(jd)

    @classmethod
    def enqueue(cls, *args: Any, tenant: str | None = None, pod: str | None = None,
                db: Any = None, **kwargs: Any) -> JobHandle:
        return cls.definition.enqueue(*args, tenant=tenant, pod=pod, db=db, **kwargs)

    @classmethod
    def enqueue_in(cls, delay: float | timedelta, *args: Any, **kwargs: Any) -> JobHandle:
        return cls.definition.enqueue_in(delay, *args, **kwargs)

    @classmethod
    def enqueue_at(cls, when: datetime | float, *args: Any, **kwargs: Any) -> JobHandle:
        return cls.definition.enqueue_at(when, *args, **kwargs)

    @classmethod
    def call(cls, *args: Any, **kwargs: Any) -> Call:
        return cls.definition.call(*args, **kwargs)

    def perform(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def _perform_signature(cls: type) -> inspect.Signature:
    sig = inspect.signature(cls.perform)  # type: ignore[attr-defined]
    params = list(sig.parameters.values())[1:]  # drop self
    return sig.replace(parameters=params)
