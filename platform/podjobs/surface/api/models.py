"""Pydantic models of the HTTP API's documents, for the OpenAPI description.

Handlers build plain dicts (podjobs.surface.api.views) and send them as they are; these models
describe them (tests check the answers against the OpenAPI document with schemathesis).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

State = Literal["queued", "running", "retrying", "succeeded", "failed", "dead", "cancelled", "paused"]


class ErrorInfo(BaseModel):
    model_config = ConfigDict(title="ErrorInfo")

    class_: str = Field(alias="class", description="the exception's class")
    message: str


class IterationProgress(BaseModel):
    """An iteration job's progress (items done of total, rate, ETA)."""

    state: str
    done: int
    total: int | None = None
    percent: float | None = None
    rate: float | None = Field(None, description="items per second over the time spent running")
    eta_s: float | None = None
    runs: int
    interrupted: int
    elapsed_s: float
    reason: str
    cursor: Any = None


class JobStatus(BaseModel):
    """A job's status monitor document."""

    id: str
    job: str
    tenant: str | None
    queue: str
    state: State
    attempts: int = Field(description="runs started so far (a resumed iteration is not a new attempt)")
    max_attempts: int | None = None
    enqueued_at: str | None = Field(description="ISO 8601, UTC")
    run_at: str | None = Field(None, description="when a queued or retrying job is due")
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None
    reason: str | None = Field(None, description="why it died, was cancelled or put back")
    error: ErrorInfo | None = None
    location: str | None = Field(None, description="the resource a succeeded job created")
    result: Any = Field(None, description="a succeeded job's return value (JSON, up to 16 KiB)")
    progress: IterationProgress | None = None
    monitor: str = Field(description="this document's path")


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """Every error answer: `detail` says what went wrong and what to do."""

    detail: str
    errors: list[FieldError] | None = None
    job: JobStatus | None = Field(None, description="the job, when the error is about one")


class QueueInfo(BaseModel):
    name: str
    size: int
    latency_s: float = Field(description="age of the oldest ready job")
    scheduled: int
    retrying: int
    in_flight: int


class WorkerInfo(BaseModel):
    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    busy: int


class PodInfo(BaseModel):
    name: str
    state: Literal["active", "draining"]
    reachable: bool
    queues: list[QueueInfo]
    workers: list[WorkerInfo] = Field(description="live workers")
    error: str | None = None


class ShardMigrations(BaseModel):
    pod: str
    pod_state: str
    known: bool = Field(description="false until the leading scheduler has read the shard")
    current: str | None = Field(description="the shard's alembic revision (null: none applied)")
    checked_at: float | None
    read_error: str | None
    pending: list[str]
    running: list[dict[str, Any]] = Field(description="revision, state, worker, since, progress")
    failures: list[dict[str, Any]] = Field(description="failed or cancelled runs with their error")
    runs: dict[str, dict[str, Any]] = Field(description="every run record, by revision")


class MigrationsStatus(BaseModel):
    leader: dict[str, Any] | None = Field(description="the leading scheduler, null when none leads")
    order: list[str] = Field(description="revisions from the oldest to the head")
    head: str | None
    halts: dict[str, dict[str, Any]] = Field(description="halted revisions: pod, error, at")
    shards: list[ShardMigrations]


class Health(BaseModel):
    status: Literal["ok"]
    zookeeper: Literal["connected", "disconnected"]
    pods: int


def enqueue_body_schema(job_names: list[str],
                        per_job: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON schema of the enqueue body (checked by podjobs.surface.api.body.parse_enqueue);
    `per_job`: each api-callable job's argument schema (podjobs.surface.api.argschema), of
    which the body must fit one."""
    job: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 200,
                           "description": "a registered job's name"}
    if job_names:
        job["enum"] = sorted(job_names)
    out = {
        "title": "EnqueueRequest",
        "type": "object",
        "required": ["job"],
        "additionalProperties": False,
        "properties": {
            "job": job,
            "args": {"type": "array", "items": {}, "description": "positional arguments (JSON)"},
            "kwargs": {"type": "object", "additionalProperties": True,
                       "description": "keyword arguments (JSON)"},
            "queue": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$",
                      "description": "another queue than the job's own"},
            "delay": {"type": "number", "minimum": 0, "maximum": 366 * 24 * 3600,
                      "description": "seconds from now before the job is due"},
        },
        "example": {"job": job_names[0] if job_names else "app.send_welcome", "args": [42]},
    }
    if per_job:
        out["anyOf"] = per_job
    return out
