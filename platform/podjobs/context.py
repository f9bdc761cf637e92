"""The context a running job receives: who it is, which attempt, where it runs.

A job function whose first parameter is named `ctx` receives it as that
argument; any job can also call `podjobs.current()`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

_local = threading.local()
_backends: dict[str, Any] = {}
_log = logging.getLogger("podjobs.job")

#: checks a job's new `db` session when the job was admitted under a tenant's directory
#: version (`tenant_version`): the tenant-move fence of podjobs.pods, which the `podjobs`
#: package installs (podjobs/__init__.py), so this module names no pods module
DbGuard = Callable[["Context", Any], None]
_db_guard: DbGuard | None = None


def set_db_guard(guard: DbGuard | None) -> None:
    """Install the check every fenced `ctx.db` session goes through (None removes it)."""
    global _db_guard
    _db_guard = guard


class Context:
    """What a job knows about its own run."""

    __slots__ = (
        "job_id", "job_name", "attempt", "queue", "enqueued_at_ms", "tenant", "pod",
        "worker_id", "payload", "_logger", "extras", "shard_url", "_db", "stopping",
        "redis_url", "_backend", "tenant_version", "claimed_at",
    )

    def __init__(
        self,
        job_id: str,
        job_name: str,
        attempt: int,
        queue: str,
        enqueued_at_ms: int,
        *,
        tenant: str | None = None,
        pod: str | None = None,
        worker_id: str | None = None,
        payload: dict[str, Any] | None = None,
        shard_url: str | None = None,
        stopping: threading.Event | None = None,
        redis_url: str | None = None,
        backend: Any = None,
        tenant_version: int | None = None,
        claimed_at: float = 0.0,
    ) -> None:
        self.job_id = job_id
        self.job_name = job_name
        #: 1 on the first run, 2 on the first retry, ...
        self.attempt = attempt
        self.queue = queue
        self.enqueued_at_ms = enqueued_at_ms
        self.tenant = tenant
        self.pod = pod
        self.worker_id = worker_id
        self.payload = payload if payload is not None else {}
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        #: per-run values middleware adds
        self.extras: dict[str, Any] = {}
        #: the database shard of the pod the job runs on
        self.shard_url = shard_url
        self._db: Any = None
        #: set when the worker is shutting down: a long job should stop at its next
        #: checkpoint and `raise podjobs.Reenqueue(...)` to resume later
        self.stopping = stopping if stopping is not None else threading.Event()
        #: the queue backend of the pod the job runs on (for checkpoints, progress)
        self.redis_url = redis_url
        self._backend = backend
        #: time.monotonic() when the worker last confirmed, right before this run, that the
        #: delivery was still its own (its generation not reaped); 0.0 outside a worker. A
        #: worker paused after that check may start the job late: a duplicate of the kind
        #: at-least-once admits (cut off mid-job), as the chaos suite's checker counts it
        self.claimed_at = claimed_at
        #: the directory version of the tenant's entry under which this pod admitted the
        #: job; every commit of `db` checks the tenant's move fence against it (pods/fence.py)
        self.tenant_version = tenant_version

    @property
    def backend(self) -> Any:
        """The backend of the pod this job runs on (made on first use in a child process):
        a RedisBackend, or a SqlBackend when `redis_url` is the pod's database URL."""
        if self._backend is None:
            if not self.redis_url:
                raise RuntimeError(f"job {self.job_name} runs without a queue backend")
            from podjobs.backend import RedisBackend

            made = _backends.get(self.redis_url)
            if made is None and self.redis_url.split(":", 1)[0] not in (
                    "redis", "rediss", "unix", "redis+sentinel"):
                from podjobs.sqlbackend import SqlBackend

                made = SqlBackend(self.redis_url, migrate=False)
            self._backend = made or RedisBackend(self.redis_url, check=False)
            _backends[self.redis_url] = self._backend
        return self._backend

    @property
    def db(self) -> Any:
        """A SQLAlchemy session on this job's shard (the tenant's pod), made on first use.

        The worker commits it when the job succeeds and rolls it back when it fails. A job
        of a tenant admitted by a pod worker cannot commit once the tenant moved off the
        pod (`podjobs.pods.fence.TenantFenced`)."""
        if self._db is None:
            if not self.shard_url:
                raise RuntimeError(
                    f"job {self.job_name} has no shard: run the worker with --pod NAME so jobs "
                    f"get their pod's database")
            from podjobs.db import session  # SQLAlchemy on first use, not at import

            if self.tenant and self.tenant_version is not None and _db_guard is None:
                raise RuntimeError(f"job {self.job_name} of tenant {self.tenant} was admitted "
                                   f"under a tenant fence, but no db guard is installed")
            self._db = session(self.shard_url)
            if self.tenant and self.tenant_version is not None:
                assert _db_guard is not None
                _db_guard(self, self._db)
        return self._db

    def once(self, key: str, ttl: float | None = None) -> bool:
        """Exactly-once effects: True the first time `key` is seen on this job's shard (the
        key is written through `ctx.db`, committed with the job's own writes), False when a
        committed run already recorded it: skip the effect then (podjobs.effects). `ttl`:
        seconds the key is kept (default a week)."""
        from podjobs import effects  # SQLAlchemy on first use, not at import

        return effects.once(self, key, effects.DEFAULT_TTL_S if ttl is None else ttl)

    def _finish_db(self, ok: bool) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        try:
            if ok:
                db.commit()
            else:
                db.rollback()
        finally:
            db.close()

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the job id, name, tenant and pod."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                _log,
                {"job_id": self.job_id, "job": self.job_name, "tenant": self.tenant, "pod": self.pod},
            )
        return self._logger

    def __repr__(self) -> str:
        return (f"Context(job_id={self.job_id!r}, job={self.job_name!r}, attempt={self.attempt}, "
                f"queue={self.queue!r}, tenant={self.tenant!r}, pod={self.pod!r})")


def current() -> Context:
    """The context of the job running in this thread; RuntimeError outside a job."""
    ctx: Context | None = getattr(_local, "ctx", None)
    if ctx is None:
        raise RuntimeError("podjobs.current() was called outside a running job")
    return ctx


def _set_current(ctx: Context | None) -> None:
    _local.ctx = ctx
