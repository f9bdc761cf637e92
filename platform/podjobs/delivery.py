"""What a worker reserved: one job's payload, decoded and checked once, typed.

`podjobs.payload.open_delivery(raw, queue, owner)` builds a `Delivery` while it checks the
payload (a payload that fails never becomes one: it goes to the dead set, malformed).
Everything after that - the middleware chain, the executor, the settlement - reads the
typed fields, never the payload dict; the dict (`data`) is kept only to write the job
again (a retry, a forward) with every member it had.

`shape` says which optional parts the payload has (tracked, follow-ups, unique key,
tenant), as bits: the executor chooses the middleware hooks a delivery passes through
once per job definition and shape, so a plain job pays only for what it uses.
"""

from __future__ import annotations

from typing import Any

#: `Delivery.shape` bits
TRACKED = 1
FOLLOWUPS = 2
UNIQUE = 4
TENANT = 8


class Delivery:
    """One reserved job (see the module docstring). Read-only by convention, except
    `in_flight` (an at-most-once job is acked before it runs) and `tenant_version` (set
    when a pod worker admits a tenant's job)."""

    __slots__ = ("id", "job", "queue", "args", "kwargs", "attempt", "tenant", "pod", "then",
                 "unique", "track", "enqueued_at", "data", "raw", "owner", "shape", "in_flight",
                 "tenant_version")

    def __init__(self, data: dict[str, Any], raw: bytes | str, queue: str, owner: str) -> None:
        #: the job id (the payload's first member; its field in the in-flight hash)
        self.id: str = data["id"]
        #: the registered job name
        self.job: str = data["job"]
        #: the queue it was reserved from
        self.queue = queue
        self.args: list[Any] = data.get("args") or []
        self.kwargs: dict[str, Any] = data.get("kwargs") or {}
        #: this run's number: 1 on the first run, 2 on the first retry, ...
        self.attempt: int = data.get("attempt", 0) + 1
        self.tenant: str | None = data.get("tenant")
        self.pod: str | None = data.get("pod")
        #: chained follow-up payloads, enqueued when this job succeeds
        self.then: list[dict[str, Any]] = data.get("then") or []
        #: the unique key held while the job is pending (released when it settles)
        self.unique: str | None = data.get("unique")
        #: seconds the status record is kept after the job ends; None = not tracked
        self.track: int | None = data.get("track")
        self.enqueued_at: int = data.get("enqueued_at", 0)
        self.data = data
        self.raw = raw
        #: the worker generation that reserved it (podjobs.identity): settlements address it
        self.owner = owner
        shape = 0
        if self.track is not None:
            shape |= TRACKED
        if self.then:
            shape |= FOLLOWUPS
        if self.unique is not None:
            shape |= UNIQUE
        if self.tenant is not None:
            shape |= TENANT
        self.shape = shape
        #: still in the owner's in-flight hash (False once an at-most-once job was acked)
        self.in_flight = True
        #: the tenant directory version under which a pod worker admitted the job
        self.tenant_version: int | None = None

    def __repr__(self) -> str:
        return (f"Delivery(id={self.id!r}, job={self.job!r}, queue={self.queue!r}, "
                f"attempt={self.attempt}, tenant={self.tenant!r})")
