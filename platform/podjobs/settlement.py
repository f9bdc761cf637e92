"""How one delivery ends: a typed `Settlement`, made by the executor and shaped by the
middleware chain, then sent to the backend in one round trip (`Backend.settle`).

Kinds (each one Lua script; each acts only on a job still in the owner's in-flight hash,
so sending it again after a lost reply is safe, except an at-most-once job's, which is
not in flight any more and is never sent twice):

| kind      | what Redis does                                                    | script       |
|-----------|--------------------------------------------------------------------|--------------|
| ACK       | done: release the unique key, enqueue the follow-ups (`children`)  | ack_one      |
| RETRY     | failed: into the retry set after `delay_ms` with the new `payload` | retry        |
| REENQUEUE | not a failure: back on its queue now or after `delay_ms`           | reenqueue    |
| DEAD      | into the dead set (`payload` says why), unique key released        | dead         |
| FORWARD   | written on pod `pod` first (by the pods middleware), acked here     | ack_one      |
| HOLD      | held on pod `pod` for a tenant move (likewise), acked here          | ack_one      |

A plain success (no follow-ups, no unique key; a tracked one with its status) is not sent
alone: the executor batches it through the acker (podjobs.acker), many jobs a round trip.
`status` is a tracked job's record, written by the same script.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from podjobs.status import StatusWrite


class Kind(Enum):
    ACK = "ack"
    RETRY = "retry"
    REENQUEUE = "reenqueue"
    DEAD = "dead"
    FORWARD = "forward"
    HOLD = "hold"
    #: nothing to settle: the job was not run and is not this worker's to settle (an
    #: at-most-once job whose early ack got no answer)
    NONE = "none"


class Settlement:
    """One delivery's end (see the module docstring)."""

    __slots__ = ("kind", "job_id", "in_flight", "delay_ms", "payload", "children", "unique",
                 "status", "reason", "error", "pod", "remote", "remote_status", "finished", "result")

    def __init__(self, kind: Kind, job_id: str, in_flight: bool = True, *, delay_ms: int = 0,
                 payload: str = "", reason: str = "", error: dict[str, str] | None = None,
                 pod: str = "", finished: bool = True, result: Any = None) -> None:
        self.kind = kind
        self.job_id = job_id
        #: False: the job is no longer in the in-flight hash (at-most-once, acked before it ran)
        self.in_flight = in_flight
        #: RETRY, REENQUEUE: milliseconds until it is due again
        self.delay_ms = delay_ms
        #: RETRY, REENQUEUE, DEAD: the payload written (DEAD: made by the executor when "")
        self.payload = payload
        #: ACK: follow-ups to enqueue, (queue, payload) pairs
        self.children: list[tuple[str, str]] = []
        #: the unique key to release with this settlement
        self.unique: str | None = None
        #: a tracked job's record, written by the same script
        self.status: StatusWrite | None = None
        #: DEAD: dead_reason; REENQUEUE: why; ACK with finished False: the unfinished state
        self.reason = reason
        #: DEAD, RETRY: the error recorded
        self.error = error
        #: FORWARD, HOLD: the pod the job was sent to
        self.pod = pod
        #: FORWARD, HOLD: the payload written on that pod
        self.remote: dict[str, Any] | None = None
        #: FORWARD, HOLD: a tracked job's record on that pod (written with the job there)
        self.remote_status: StatusWrite | None = None
        #: ACK: False when the delivery ended without the job finishing (podjobs.invoke.Unfinished)
        self.finished = finished
        #: ACK: what the job returned (a tracked job's record keeps it)
        self.result = result

    def batched(self) -> bool:
        """A plain success the acker can batch with others."""
        return (self.kind is Kind.ACK and not self.children and self.unique is None
                and (self.finished or self.status is None))

    def __repr__(self) -> str:
        return (f"Settlement({self.kind.name}, {self.job_id!r}, in_flight={self.in_flight}, "
                f"reason={self.reason!r})")


#: the job was not run and nothing is settled (see Kind.NONE)
NOTHING = Settlement(Kind.NONE, "")
