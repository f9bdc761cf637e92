"""The job log: a link of the middleware chain that writes one line when a job starts and
one when its delivery ends (logger `podjobs.jobs`, INFO), like Sidekiq's.

    ... INFO podjobs.jobs: start billing.charge 01J... (queue default, attempt 1, tenant shop-1)
    ... INFO podjobs.jobs: done billing.charge 01J... succeeded in 12.3 ms

With `--log-format json` each line carries job_id, job, queue, attempt, tenant, pod and,
at the end, duration_ms and outcome (and the dead or put-back reason). The link takes part
only when the logger is enabled for INFO when the worker starts: switched off (`--job-log
off`), it costs nothing.
"""

from __future__ import annotations

import logging

from podjobs.delivery import Delivery
from podjobs.invoke import Outcome
from podjobs.jobs import JobDef
from podjobs.middleware import Middleware
from podjobs.settlement import Kind, Settlement

log = logging.getLogger("podjobs.jobs")

_OUTCOME = {Kind.RETRY: "retried", Kind.DEAD: "dead", Kind.REENQUEUE: "reenqueued",
            Kind.FORWARD: "forwarded", Kind.HOLD: "held"}


def outcome_of(out: Outcome | None, s: Settlement | None) -> str:
    """What a delivery came to: succeeded, unfinished, retried, dead, reenqueued, forwarded,
    held, or "" (not run and nothing settled)."""
    if s is None:
        return "succeeded" if out is not None else ""
    if s.kind is Kind.ACK:
        return "succeeded" if s.finished else "unfinished"
    return _OUTCOME.get(s.kind, "")


class JobLog(Middleware):
    def __init__(self, pod: str | None = None) -> None:
        self.pod = pod

    def wants(self, jd: JobDef, shape: int) -> bool:
        return log.isEnabledFor(logging.INFO)

    def _fields(self, d: Delivery) -> dict[str, object]:
        return {"job_id": d.id, "job": d.job, "queue": d.queue, "attempt": d.attempt,
                "tenant": d.tenant, "pod": self.pod or d.pod, "worker": d.owner}

    def before_start(self, d: Delivery, jd: JobDef) -> Settlement | None:
        log.info("start %s %s (queue %s, attempt %d%s)", d.job, d.id, d.queue, d.attempt,
                 f", tenant {d.tenant}" if d.tenant else "", extra=self._fields(d))
        return None

    def after_settle(self, d: Delivery, jd: JobDef, out: Outcome | None,
                     s: Settlement | None) -> None:
        outcome = outcome_of(out, s)
        if not outcome:
            return
        extra = self._fields(d)
        extra["outcome"] = outcome
        ms = round(out.duration * 1000, 1) if out is not None else None
        extra["duration_ms"] = ms
        why = s.reason if s is not None and s.kind in (Kind.DEAD, Kind.REENQUEUE) else ""
        if why:
            extra["reason"] = why
        log.info("done %s %s %s%s%s", d.job, d.id, outcome,
                 f" in {ms} ms" if ms is not None else "", f" ({why})" if why else "", extra=extra)
