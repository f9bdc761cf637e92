"""Retries with backoff (`@job(retries=N, backoff=...)`): a failed run is tried again
later, until its retries are spent; then it is dead (reason retries_exhausted).

Arguments that do not fit the function, and a job a middleware refused, are not retried;
neither is a job a link inside this one settled otherwise (an app's middleware that made
it dead with a reason of its own).
At-most-once jobs are never retried (this link does not take part for them).
"""

from __future__ import annotations

import logging
import time

from podjobs import backoff as backoff_mod
from podjobs.delivery import Delivery
from podjobs.invoke import Failure, Outcome
from podjobs.jobs import DeliveryMode, JobDef
from podjobs.middleware import Middleware
from podjobs.payload import encode
from podjobs.settlement import Kind, Settlement

log = logging.getLogger("podjobs.executor")

_NO_RETRY = (Failure.ARGUMENTS, Failure.REFUSED, Failure.REENQUEUE)


class Retries(Middleware):
    def wants(self, jd: JobDef, shape: int) -> bool:
        return jd.options.delivery is DeliveryMode.AT_LEAST_ONCE

    def on_failure(self, d: Delivery, jd: JobDef, out: Outcome, s: Settlement) -> Settlement:
        failure = out.failure.value if out.failure else "error"
        if s.kind is not Kind.DEAD or out.failure in _NO_RETRY or s.reason != failure:
            return s  # not the run's own failure: a link inside decided (kept as it is)
        decision = backoff_mod.decide(d.attempt, jd.options.retries, jd.options.backoff)
        if isinstance(decision, backoff_mod.GiveUp):
            s.reason = "retries_exhausted"
            return s
        err = s.error or out.error_dict()
        nxt = dict(d.data)
        nxt["attempt"] = d.attempt
        nxt["error"] = err
        nxt["failure"] = failure
        nxt["failed_at"] = time.time_ns() // 1_000_000
        log.info("job %s %s failed (attempt %d, %s: %s); retry in %.1f s", jd.name, d.id,
                 d.attempt, err["class"], err["message"][:200], decision.delay_s)
        return Settlement(Kind.RETRY, d.id, d.in_flight, delay_ms=int(decision.delay_s * 1000),
                          payload=encode(nxt, 1 << 30), error=err)
