"""The enqueuer: turns calls into payloads and writes them to the right backend.

1. `Client(backend)` enqueues to one pod's backend; `configure(...)` sets the
   process-wide default that `job.enqueue(...)` uses (or `PODJOBS_REDIS_URL`).
2. `enqueue_call` writes one job (now, later, unique), `enqueue_many` many calls of one
   job in one round trip.
3. Routing by tenant is delegated to a resolver (`podjobs.pods` installs one);
   without it a `tenant=` is recorded in the payload and the default pod used.
4. `configure(zk=...)` (and `PODJOBS_ZK`) builds a pod-aware client with the ZooKeeper
   connector the `podjobs` package installs (`set_zk_connector`: podjobs.pods.router's
   `connect`); this module names no pods module.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from podjobs.errors import ArgumentsMismatch, BackendTimeout, ConfigurationError
from podjobs.ids import new_id
from podjobs.payload import DEFAULT_MAX_PAYLOAD_BYTES, check_value, dumps, encode
from podjobs.record import Record

if TYPE_CHECKING:
    from podjobs.backend import Backend
    from podjobs.jobs import Call, JobDef
    from podjobs.quota import TenantQuota

class JobHandle:
    """What enqueue returns: the job's id and where it went. A plain slots class, not a
    dataclass: every worker imports it, and Python 3.11 takes ~0.8 ms to make a dataclass
    (a worker's start-up: NOTES "What remains" 0)."""

    __slots__ = ("id", "job", "queue", "pod", "tenant", "enqueued")

    def __init__(self, id: str, job: str, queue: str, pod: str | None = None,
                 tenant: str | None = None, enqueued: bool = True) -> None:
        self.id = id
        self.job = job
        self.queue = queue
        self.pod = pod
        self.tenant = tenant
        #: False when a unique enqueue found an identical job already pending
        self.enqueued = enqueued

    def _key(self) -> tuple[str, str, str, str | None, str | None, bool]:
        return (self.id, self.job, self.queue, self.pod, self.tenant, self.enqueued)

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if type(other) is JobHandle else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        return (f"JobHandle(id={self.id!r}, job={self.job!r}, queue={self.queue!r}, "
                f"pod={self.pod!r}, tenant={self.tenant!r}, enqueued={self.enqueued!r})")

    def status(self) -> Any:
        """The job's `podjobs.handles.JobStatus`: a tracked job's status record, else where
        it is in its pod's Redis ("unknown" once an untracked job is done)."""
        from podjobs import handles

        return handles.status(self)

    def cancel(self) -> bool:
        """Cancel a tracked job that has not started: True when cancelled (now or before),
        False when it started or finished (see podjobs.handles)."""
        from podjobs import handles

        return handles.cancel(self)


#: JobDef -> (fewest, most) positional arguments its function takes when they alone are
#: given (None: bind every call), so a bulk enqueue checks a count, not a full bind (3 us)
_ARITY: dict[int, tuple[JobDef, tuple[int, int] | None]] = {}


def _arity(jd: JobDef) -> tuple[int, int] | None:
    import inspect

    got = _ARITY.get(id(jd))
    if got is not None and got[0] is jd:
        return got[1]
    params = list(jd._signature.parameters.values())[1 if jd.takes_ctx else 0:]
    plain = all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    required = sum(1 for p in params if p.default is inspect.Parameter.empty)
    arity = (required, len(params)) if plain else None
    _ARITY[id(jd)] = (jd, arity)  # holds jd: its id is never reused while cached
    return arity


def _fits(jd: JobDef, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    if not kwargs:
        arity = _arity(jd)
        if arity is not None and arity[0] <= len(args) <= arity[1]:
            return
    why = jd.arguments_fit(args, kwargs)
    if why is not None:
        raise ArgumentsMismatch(
            f"job {jd.name!r}: arguments {list(args)!r}, {kwargs!r} do not fit "
            f"{jd.name}{jd._signature} ({why}); nothing was enqueued")


def check_arguments(call: Call) -> None:
    """`ArgumentsMismatch` before anything is written when the arguments of `call` (or of a
    chained follow-up) do not bind to the job's function, as a worker would call it."""
    stack = [call]
    while stack:
        c = stack.pop()
        _fits(c.job, c.args, c.kwargs)
        stack.extend(c.followups)


class Target(Record):
    """Where a job goes: the pod, its backend, and whether it is held there (tenant moving);
    `quota`: the tenant's enqueue limits on this pod (podjobs.quota), checked in the
    enqueue's step."""

    __slots__ = ("pod", "backend", "hold", "quota")

    def __init__(self, pod: str | None, backend: Backend, hold: bool = False,
                 quota: TenantQuota | None = None) -> None:
        self.pod = pod
        self.backend = backend
        self.hold = hold
        self.quota = quota


#: resolves (tenant, pod) to a Target; installed by podjobs.pods
Resolver = Callable[[str | None, str | None], Target]


class Client:
    """Enqueues jobs to one backend, or to the pod a resolver picks."""

    def close(self) -> None:
        """Release connections (a pod-aware client also stops its ZooKeeper session)."""
        if self.backend is not None:
            self.backend.close()

    def __init__(self, backend: Backend | None = None, *, resolver: Resolver | None = None,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        if backend is None and resolver is None:
            raise ConfigurationError("a Client needs a backend or a resolver")
        self.backend = backend
        self.resolver = resolver
        self.max_payload_bytes = max_payload_bytes

    def _target(self, tenant: str | None, pod: str | None) -> Target:
        if self.resolver is not None:
            return self.resolver(tenant, pod)
        assert self.backend is not None
        return Target(pod, self.backend)

    def enqueue_call(self, call: Call, *, tenant: str | None = None, pod: str | None = None,
                     delay: float | timedelta | None = None,
                     at: datetime | float | None = None, connection: Any = None) -> JobHandle:
        check_arguments(call)
        target = self._target(tenant, pod)
        pod_name, backend = target.pod, target.backend
        now_ms = time.time_ns() // 1_000_000
        p = call.payload(now_ms, tenant, pod_name)
        text = encode(p, self.max_payload_bytes)
        opts = call.job.options
        queue = call.queue or opts.queue
        status = None
        if call.track is not None:
            from podjobs import status as status_mod

            status = status_mod.enqueued(p, opts.retries + 1)
        unique = None
        if opts.unique_for:
            unique = (p["unique"], int(opts.unique_for * 1000), p["id"])
        delay_ms = at_ms = None
        if delay is not None:
            secs = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
            delay_ms = max(0, int(secs * 1000))
        elif at is not None:
            if isinstance(at, datetime):
                if at.tzinfo is None:
                    raise ConfigurationError(
                        f"enqueue_at got a naive datetime {at!r}; pass an aware one "
                        f"(datetime.now(timezone.utc) + ...) so the time is unambiguous")
                at_ms = int(at.timestamp() * 1000)
            else:
                at_ms = int(float(at) * 1000)
        try:
            if target.hold and tenant is not None and delay_ms is None and at_ms is None:
                backend.hold(tenant, queue, [(p["id"], text)], status=status)
                return JobHandle(p["id"], call.job.name, queue, pod_name, tenant)
            if connection is not None:
                n = _enqueue_with(backend, connection, queue, text, delay_ms, at_ms, unique, status)
            else:
                n = backend.enqueue(queue, [text], delay_ms=delay_ms, at_ms=at_ms, unique=unique,
                                    status=status, quota=target.quota, tenant=tenant)
        except BackendTimeout as exc:  # the job may be enqueued: say which one
            exc.job_id = p["id"]
            raise
        return JobHandle(p["id"], call.job.name, queue, pod_name, tenant, enqueued=n > 0)

    def enqueue_many(self, jd: JobDef, arg_sets: Sequence[tuple[Sequence[Any], dict[str, Any]]],
                     *, tenant: str | None = None, pod: str | None = None) -> list[JobHandle]:
        """Enqueue one job with many argument sets in one round trip (the bulk fast path)."""
        if jd.options.unique_for:
            raise ConfigurationError(
                f"job {jd.name!r} is unique; enqueue it one at a time so duplicates are refused")
        target = self._target(tenant, pod)
        pod_name, backend = target.pod, target.backend
        now_ms = time.time_ns() // 1_000_000
        name, queue, limit = jd.name, jd.options.queue, self.max_payload_bytes
        where = f"job {name!r} argument"
        texts = []
        handles = []
        # the same JSON `encode` would write for {"id", "job", "queue", "args", "kwargs"?
        # (only when there are some), "enqueued_at", "tenant"?, "pod"?}, with the fixed parts
        # encoded once ("attempt" is absent until a run: 0)
        head = f',"job":{dumps(name)},"queue":{dumps(queue)},"args":'
        tail = f',"enqueued_at":{now_ms}'
        if tenant is not None:
            tail += f',"tenant":{dumps(tenant)}'
        if pod_name is not None:
            tail += f',"pod":{dumps(pod_name)}'
        tail += "}"
        for args, kwargs in arg_sets:
            _fits(jd, args, kwargs)
            if args:
                check_value(args, where)
            if kwargs:
                check_value(kwargs, where)
            jid = new_id(now_ms)
            text = ('{"id":"' + jid + '"' + head + (dumps(list(args)) if args else "[]")
                    + (',"kwargs":' + dumps(kwargs) if kwargs else "") + tail)
            if len(text) > limit // 4:
                text = encode(json.loads(text), limit)  # enforces the size limit with its message
            texts.append(text)
            handles.append(JobHandle(jid, name, queue, pod_name, tenant))
        if target.hold and tenant is not None:
            backend.hold(tenant, queue, [(h.id, t) for h, t in zip(handles, texts, strict=True)])
        elif tenant is not None:
            backend.enqueue(queue, texts, quota=target.quota, tenant=tenant)
        else:
            backend.enqueue(queue, texts)
        return handles


def _enqueue_with(backend: Backend, connection: Any, queue: str, text: str, delay_ms: int | None,
                  at_ms: int | None, unique: tuple[str, int, str] | None, status: Any) -> int:
    """Write one job in the caller's transaction (`connection`): the SQL backend's own."""
    from podjobs.errors import NotSupported

    write = getattr(backend, "enqueue_with", None)
    if write is None:
        raise NotSupported(
            f"enqueue in the caller's transaction (connection=) needs the SQL backend; this "
            f"pod's queue is on {type(backend).__name__}: enqueue without connection=")
    n: int = write(connection, queue, [text], delay_ms=delay_ms, at_ms=at_ms, unique=unique,
                   status=status)
    return n


_default: Client | None = None
_lock = threading.Lock()
#: "hosts[/root]" -> a pod-aware Client; installed by podjobs/__init__.py
_zk_connect: Callable[[str], Client] | None = None


def set_zk_connector(connect: Callable[[str], Client] | None) -> None:
    """Install what `configure(zk=...)` uses to make a pod-aware client."""
    global _zk_connect
    _zk_connect = connect


def configure(redis_url: str | None = None, *, zk: str | None = None,
              database_url: str | None = None, client: Client | None = None) -> Client:
    """Set the process-wide client `job.enqueue` uses.

    - `redis_url=`: one pod's Redis, no routing (a single-pod application);
    - `database_url=`: one pod's queue in a SQL database (podjobs.sqlbackend: SQLite,
      MySQL/MariaDB, PostgreSQL), its tables created or upgraded on first use;
    - `zk="host:port[/root]"`: pod-aware: `tenant=` routes through the directory in
      ZooKeeper (cached, kept fresh by watches);
    - `client=`: a client you built.
    """
    global _default
    from podjobs.backend import RedisBackend

    with _lock:
        if client is None:
            if zk is not None:
                if _zk_connect is None:
                    raise ConfigurationError("configure(zk=...) needs podjobs.pods: no ZooKeeper "
                                             "connector is installed")
                client = _zk_connect(zk)
            elif redis_url is not None and database_url is not None:
                raise ConfigurationError("configure() takes redis_url= or database_url=, not both: "
                                         "a pod's queue is on one backend")
            elif redis_url is not None:
                client = Client(RedisBackend(redis_url))
            elif database_url is not None:
                from podjobs.sqlbackend import SqlBackend

                client = Client(SqlBackend(database_url))
            else:
                raise ConfigurationError("configure() needs redis_url=, database_url=, zk= or client=")
        old, _default = _default, client
        if old is not None and old is not client and hasattr(old, "close"):
            old.close()
        return client


def get_client() -> Client:
    """The default client; made from PODJOBS_REDIS_URL on first use if not configured."""
    global _default
    if _default is None:
        zk = os.environ.get("PODJOBS_ZK")
        url = os.environ.get("PODJOBS_REDIS_URL")
        db_url = os.environ.get("PODJOBS_DATABASE_URL")
        if zk:
            configure(zk=zk)
        elif url:
            configure(url)
        elif db_url:
            configure(database_url=db_url)
        else:
            raise ConfigurationError(
                "podjobs is not configured: call podjobs.configure(zk='host:port/podjobs') or "
                "podjobs.configure(redis_url=...) or podjobs.configure(database_url=...), or set "
                "PODJOBS_ZK, PODJOBS_REDIS_URL or PODJOBS_DATABASE_URL")
    assert _default is not None
    return _default


#: the session of the innermost `with podjobs.outbox(session):` block (podjobs.transactional)
OUTBOX: contextvars.ContextVar[Any] = contextvars.ContextVar("podjobs_outbox_session", default=None)
#: `session.info` key: the session's outbox enqueues are ordered (podjobs.transactional)
OUTBOX_ORDERED = "podjobs_outbox_ordered"
#: the session of an open `with podjobs.after_commit(session):` block (podjobs.aftercommit)
AFTER_COMMIT: contextvars.ContextVar[Any] = contextvars.ContextVar("podjobs_after_commit",
                                                                   default=None)


def after_commit(session: Any) -> contextlib.AbstractContextManager[Any]:
    """Inside the block, `job.enqueue(...)` (and podjobs.enqueue) keep the job on `session` (a
    SQLAlchemy session) and enqueue it when the session commits; a rollback drops it. Not
    atomic with the commit: see podjobs.aftercommit (and the outbox, which is)."""
    from podjobs import aftercommit  # SQLAlchemy: loaded by the first use

    return aftercommit.after_commit(session)


@contextlib.contextmanager
def outbox(session: Any, ordered: bool = False) -> Iterator[Any]:
    """Inside the block, `job.enqueue(...)` (and podjobs.enqueue) write the job into the outbox
    table through `session` (a SQLAlchemy session on the tenant's shard), in its transaction:
    the jobs leave for Redis only if and when it commits (podjobs.transactional).
    `ordered=True`: the session's outbox enqueues (in the block and after it, `db=` too) take
    their tenant's outbox lock, so two transactions of one tenant that enqueue leave in the
    order they commit (the second waits at its first enqueue for the first to end)."""
    if ordered:
        session.info[OUTBOX_ORDERED] = True
    token = OUTBOX.set(session)
    try:
        yield session
    finally:
        OUTBOX.reset(token)
