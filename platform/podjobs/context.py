"""The context a running job receives: who it is, which attempt, where it runs.

A job function whose first parameter is named `ctx` receives it as that
argument; any job can also call `podjobs.current()`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

_local = threading.local()
_log = logging.getLogger("podjobs.job")


class Context:
    """What a job knows about its own run."""

    __slots__ = (
        "job_id", "job_name", "attempt", "queue", "enqueued_at_ms", "tenant", "pod",
        "worker_id", "payload", "_logger", "extras",
    )

    def __init__(
        self,
        job_id: str,
        job_name: str,
        attempt: int,
        queue: str,
        enqueued_at_ms: int,
        tenant: str | None = None,
        pod: str | None = None,
        worker_id: str | None = None,
        payload: dict[str, Any] | None = None,
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
        #: per-run values middleware adds (for example a database session)
        self.extras: dict[str, Any] = {}

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
