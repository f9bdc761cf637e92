"""podjobs: a sharded, pod-aware background-job platform.

The public API:

    import podjobs

    @podjobs.job(queue="critical", retries=5)
    def send_welcome(ctx, user_id): ...

    podjobs.configure(redis_url="redis://127.0.0.1:6379/0")
    send_welcome.enqueue(42)
"""

from podjobs.backoff import constant, exponential
from podjobs.client import Client, configure, get_client
from podjobs.context import Context, current
from podjobs.errors import (
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
from podjobs.jobs import Call, Delivery, Job, JobDef, JobHandle, job
from podjobs.middleware import Middleware, SkipJob, add_middleware


def enqueue(job: JobDef | type[Job], *args: object, tenant: str | None = None,
            pod: str | None = None, **kwargs: object) -> JobHandle:
    """Enqueue `job` for a tenant (routed to its pod) or on a named pod."""
    jd: JobDef = job.definition if isinstance(job, type) else job
    return jd.enqueue(*args, tenant=tenant, pod=pod, **kwargs)


def enqueue_all_pods(job: JobDef | type[Job], *args: object, **kwargs: object) -> list[JobHandle]:
    """Enqueue the same job once on every active pod; returns one handle per pod."""
    from podjobs.pods.router import enqueue_all_pods as fan_out

    handles: list[JobHandle] = fan_out(job, *args, **kwargs)
    return handles


__all__ = [
    "BackendUnavailable", "Call", "Client", "ConfigurationError", "Context", "Delivery", "Job",
    "JobDef", "JobHandle", "JobNotFound", "Middleware", "PayloadError", "PodjobsError", "SkipJob",
    "UnknownJob", "add_middleware", "configure", "constant", "current", "exponential",
    "get_client", "job", "enqueue", "enqueue_all_pods", "PodDraining", "TenantMoving",
    "UnknownPod", "UnknownTenant",
]

from podjobs.invoke import Reenqueue  # noqa: E402

__all__ += ["Reenqueue"]

from podjobs.iteration import IterationJob  # noqa: E402

__all__ += ["IterationJob"]

from podjobs.status import Created  # noqa: E402

__all__ += ["Created"]

from podjobs.scheduler.periodic import periodic  # noqa: E402

__all__ += ["periodic"]
