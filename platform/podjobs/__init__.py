"""podjobs: a sharded, pod-aware background-job platform.

The public API:

    import podjobs

    @podjobs.job(queue="critical", retries=5)
    def send_welcome(ctx, user_id): ...

    podjobs.configure(redis_url="redis://127.0.0.1:6379/0")
    send_welcome.enqueue(42)

This module is the library's face and runs before any podjobs module is imported, so at
module level it imports only the core (import-linter contract "facade" in pyproject.toml).
It reaches the layers above the core only in function bodies, each named in that
contract: `IterationJob` (a lazy module attribute: `from podjobs import IterationJob`
stays, without loading iteration, Redis scripts and SQLAlchemy helpers for every
`import podjobs`), `enqueue_all_pods`, and the two hooks it installs into the core:
`configure(zk=...)` connects through podjobs.pods.router, and a fenced `ctx.db` session
is checked by podjobs.pods.fence. `periodic` is lazy too (a core module, but one a worker
of an app without periodic jobs need not import before its first job).
"""

from typing import TYPE_CHECKING, Any

from podjobs import client as _client
from podjobs import context as _context
from podjobs.backoff import constant, exponential
from podjobs.client import Client, after_commit, configure, get_client, outbox
from podjobs.context import Context, current
from podjobs.delivery import Delivery
from podjobs.errors import (
    ArgumentsMismatch,
    BackendUnavailable,
    ConfigurationError,
    JobNotFound,
    PayloadError,
    PodDraining,
    PodjobsError,
    TenantMoving,
    UnknownJob,
    UnknownPod,
    UnknownTenant,
)
from podjobs.invoke import Reenqueue
from podjobs.jobs import Call, DeliveryMode, Job, JobDef, JobHandle, job
from podjobs.middleware import Middleware, SkipJob, add_middleware
from podjobs.settlement import Settlement
from podjobs.status import Created

if TYPE_CHECKING:
    from podjobs.cron import periodic
    from podjobs.iteration import IterationJob


def enqueue(job: JobDef | type[Job], *args: object, tenant: str | None = None,
            pod: str | None = None, db: Any = None, **kwargs: object) -> JobHandle:
    """Enqueue `job` for a tenant (routed to its pod) or on a named pod; `db=` (a SQLAlchemy
    session on the tenant's shard) writes it into that transaction's outbox."""
    jd: JobDef = job.definition if isinstance(job, type) else job
    return jd.enqueue(*args, tenant=tenant, pod=pod, db=db, **kwargs)


def enqueue_all_pods(job: JobDef | type[Job], *args: object, **kwargs: object) -> list[JobHandle]:
    """Enqueue the same job once on every active pod; returns one handle per pod."""
    from podjobs.pods.router import enqueue_all_pods as fan_out

    handles: list[JobHandle] = fan_out(job, *args, **kwargs)
    return handles


def find(job_id: str) -> JobHandle:
    """The handle of a tracked job (`job.call(...).tracked().enqueue()`), looked for on every
    pod the client knows; `JobNotFound` otherwise."""
    from podjobs import handles

    return handles.find(job_id)


def _connect_zk(spec: str) -> Client:
    """`configure(zk=spec)`: a client routing through the directory in ZooKeeper."""
    from podjobs.pods.router import connect

    client: Client = connect(spec)
    return client


def _fence_db(ctx: Context, session: Any) -> None:
    """A tenant job's `ctx.db`: every commit checks the tenant's move fence."""
    from podjobs.pods.fence import guard

    assert ctx.shard_url is not None and ctx.tenant is not None
    assert ctx.tenant_version is not None
    guard(session, ctx.shard_url, ctx.tenant, ctx.tenant_version)


_client.set_zk_connector(_connect_zk)
_context.set_db_guard(_fence_db)


def __getattr__(name: str) -> Any:
    if name == "IterationJob":  # public since issue 5; loads podjobs.iteration on first use
        from podjobs.iteration import IterationJob

        return IterationJob
    if name == "periodic":  # loads podjobs.cron (and croniter's helpers) only where used
        from podjobs.cron import periodic

        return periodic
    raise AttributeError(f"module 'podjobs' has no attribute {name!r}")


__all__ = [
    "ArgumentsMismatch", "BackendUnavailable", "Call", "Client", "ConfigurationError", "Context",
    "Created", "Delivery", "DeliveryMode", "IterationJob", "Job", "JobDef", "JobHandle",
    "JobNotFound", "Middleware", "PayloadError", "PodDraining", "PodjobsError", "Reenqueue",
    "Settlement", "SkipJob", "TenantMoving",
    "UnknownJob", "UnknownPod", "UnknownTenant", "add_middleware", "after_commit", "configure",
    "constant",
    "current", "enqueue", "enqueue_all_pods", "exponential", "find", "get_client", "job",
    "outbox", "periodic",
]
