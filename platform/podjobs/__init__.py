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
    PodjobsError,
    UnknownJob,
)
from podjobs.jobs import Call, Delivery, Job, JobDef, JobHandle, job
from podjobs.middleware import Middleware, SkipJob, add_middleware

__all__ = [
    "BackendUnavailable", "Call", "Client", "ConfigurationError", "Context", "Delivery", "Job",
    "JobDef", "JobHandle", "JobNotFound", "Middleware", "PayloadError", "PodjobsError", "SkipJob",
    "UnknownJob", "add_middleware", "configure", "constant", "current", "exponential",
    "get_client", "job",
]
