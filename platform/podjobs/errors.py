"""Every error podjobs raises on purpose. Each message names the value that was
wrong and what to do about it."""

from __future__ import annotations


class PodjobsError(Exception):
    """Base class: the CLI prints these as one line, without a traceback, and exits with
    `exit_code` (see `podjobs.exits`: 1 failed, 2 usage, 4 a server unreachable)."""

    exit_code = 1


class ConfigurationError(PodjobsError):
    """A setting, flag or server configuration podjobs cannot work with."""

    exit_code = 2


class ServerUnreachable(ConfigurationError):
    """A server (ZooKeeper, a pod's Redis, a shard) did not answer: nothing is known about
    what was asked (exit code 4). A `ConfigurationError` too, for the callers that catch
    those around `ZK.start`."""

    exit_code = 4


class MissingBinary(ConfigurationError):
    """A server binary is not installed; the message names the Debian package."""


class PortInUse(ConfigurationError):
    """A port podjobs was told to use is already taken by another process."""


class PayloadError(PodjobsError, ValueError):
    """Arguments that cannot be sent as a job payload (type or size)."""


class PayloadTooLarge(PayloadError):
    """A payload over the size limit."""


class BackendUnavailable(PodjobsError):
    """The queue backend (Redis) could not be reached or refused the write."""

    exit_code = 4


class BackendTimeout(BackendUnavailable):
    """The queue backend did not answer in time: the command was sent, so the change may or
    may not have been made. `job_id`: the job an enqueue was writing (when known)."""

    job_id: str | None = None


class NotSupported(ConfigurationError):
    """A feature the pod's queue backend cannot do (the SQL backend's missing features): it
    is refused, never done differently."""


class ArgumentsMismatch(PodjobsError, TypeError):
    """Arguments that do not bind to the job's function; nothing was enqueued."""


class UnknownJob(PodjobsError, LookupError):
    """A job name that is not registered in this process."""


class JobNotFound(PodjobsError, LookupError):
    """No job with that id in any queue, set or in-flight list."""


class UnknownTenant(PodjobsError, LookupError):
    """A tenant that is not in the directory; nothing was written anywhere."""


class UnknownPod(ConfigurationError, LookupError):
    """A pod name that is not in the topology."""


class PodDraining(PodjobsError):
    """The pod is draining and takes no new jobs."""


class TenantMoving(PodjobsError):
    """The tenant is being moved between pods; its new jobs are held, not run."""
