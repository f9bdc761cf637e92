"""At-most-once jobs (`@job(delivery="at_most_once")`): acked before they run, never run
twice, never retried.

- before the run: ack it (one round trip, not repeated after a "may or may not"); when
  the ack gets no answer, or finds the job no longer in flight (its worker generation was
  reaped meanwhile and the job went back to its queue), the job is not run here (NOTHING);
- a failure (other than asking to be put back, or arguments/refusal, which are dead
  anyway) goes to the dead set, reason at_most_once_failed.
"""

from __future__ import annotations

from podjobs.delivery import Delivery
from podjobs.invoke import Failure, Outcome
from podjobs.jobs import DeliveryMode, JobDef
from podjobs.middleware import Middleware
from podjobs.settlement import NOTHING, Kind, Settlement
from podjobs.settler import Settler

_KEEP = (Failure.REENQUEUE, Failure.ARGUMENTS, Failure.REFUSED)


class AtMostOnce(Middleware):
    def __init__(self, settler: Settler) -> None:
        self.settler = settler

    def wants(self, jd: JobDef, shape: int) -> bool:
        return jd.options.delivery is DeliveryMode.AT_MOST_ONCE

    def before_start(self, d: Delivery, jd: JobDef) -> Settlement | None:
        backend = self.settler.backend
        if not self.settler.persist("ack an at-most-once job before it runs", d.id, d.owner, False,
                                    lambda: backend.ack(d.owner, {d.queue: [d.id]})):
            return NOTHING  # no longer ours (or no answer): not run, at most once
        d.in_flight = False
        return None

    def on_failure(self, d: Delivery, jd: JobDef, out: Outcome, s: Settlement) -> Settlement:
        if out.failure in _KEEP:
            return s
        return Settlement(Kind.DEAD, d.id, d.in_flight, reason="at_most_once_failed", error=s.error)
