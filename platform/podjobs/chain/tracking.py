"""Status tracking (a job enqueued with `track`, see podjobs.status): its record follows
the delivery.

- before the run: "running" is buffered in the acker (written with the next batch, only
  while the job is still in flight there, see ack_status.lua);
- every settlement carries the record's new state, written by the same script:
  succeeded, retrying, queued again (put back, or paused), cancelled, failed or dead, or -
  for a job sent to another pod - moved (here) and queued (there).
"""

from __future__ import annotations

from podjobs import status as status_mod
from podjobs.acker import Acker
from podjobs.delivery import TRACKED, Delivery
from podjobs.jobs import JobDef
from podjobs.middleware import Middleware
from podjobs.settlement import Kind, Settlement


class Tracking(Middleware):
    def __init__(self, acker: Acker) -> None:
        self.acker = acker

    def wants(self, jd: JobDef, shape: int) -> bool:
        return bool(shape & TRACKED)

    def before_start(self, d: Delivery, jd: JobDef) -> Settlement | None:
        self.acker.started(d.queue, d.id, d.in_flight, status_mod.started(d.data, d.owner, d.attempt),
                           d.owner)
        return None

    def before_settle(self, d: Delivery, jd: JobDef, s: Settlement) -> Settlement:
        k = s.kind
        if k is Kind.ACK:
            s.status = (status_mod.succeeded(d.data, s.result) if s.finished
                        else status_mod.unfinished(d.data, s.reason, d.owner))
        elif k is Kind.RETRY:
            s.status = status_mod.retrying(d.data, d.attempt, s.error or {})
        elif k is Kind.REENQUEUE:
            s.status = status_mod.requeued(d.data, s.reason or "reenqueued")
        elif k is Kind.DEAD:
            s.status = status_mod.ended(d.data, s.reason, s.error or {}, d.attempt)
        elif k is Kind.FORWARD or k is Kind.HOLD:
            s.status = status_mod.moved_away(d.data, s.pod)
            if s.remote is not None:
                s.remote_status = status_mod.forwarded(s.remote, jd.options.retries + 1)
        return s
