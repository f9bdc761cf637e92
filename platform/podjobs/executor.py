"""Running one reserved job: the loop of the middleware chain (podjobs.middleware).

1. Open the delivery: decode and check the payload once into a typed `Delivery`
   (podjobs.payload.open_delivery); a payload that fails (reason malformed, raw text kept)
   or names an unknown job goes to the dead set once, and the worker goes on.
2. Choose the hooks once per job definition and delivery shape (`Plan`).
3. `before_start` hooks, outermost first: one may end the delivery without a run (a
   tenant's job forwarded to its pod; an at-most-once job whose early ack got no answer).
4. The last check that the delivery is still this worker generation's (podjobs.identity:
   a pause may have had it reaped), then run the job (in this thread, or through a
   process-isolation child): an `Outcome`.
5. The outcome's settlement: a plain success is acked in a batch at once when no hook
   wants to see it; otherwise an ACK (finished or not), or on failure DEAD (REENQUEUE when
   the job asked for it), shaped by `on_success` / `on_failure` and `before_settle`
   hooks, inner first (retries turn DEAD into RETRY, follow-ups join an ACK, tracking adds
   the status write), then sent (podjobs.settler).
6. `after_settle` hooks, always, with the outcome (None: not run) and the settlement sent
   (None: a plain success acked in a batch, or nothing settled).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from podjobs.context import Context
from podjobs.delivery import Delivery
from podjobs.invoke import Failure, Outcome, invoke
from podjobs.jobs import JobDef, JobOptions, registered
from podjobs.middleware import Middleware, Plan
from podjobs.payload import BadPayload, encode, open_delivery
from podjobs.settlement import Kind, Settlement
from podjobs.settler import Settler
from podjobs.stops import StopSignals

log = logging.getLogger("podjobs.executor")

#: runs a job somewhere (this thread, or a child process) and says what happened
Runner = Callable[[JobDef, Context, list[Any], dict[str, Any]], Outcome]


def _unknown() -> None:
    """Stands for a job name no definition in this worker has (settled dead)."""


#: the definition a delivery of an unknown job passes the chain's settle hooks with
UNKNOWN = JobDef("podjobs.unknown", _unknown, JobOptions())


class Executor:
    """Runs one worker's deliveries through its chain; one per executor thread."""

    def __init__(self, settler: Settler, chain: Sequence[Middleware], *, runner: Runner = invoke,
                 pod: str | None = None, shard_url: str | None = None,
                 stops: StopSignals | None = None, interrupt: Callable[[], None] | None = None,
                 may_start: Callable[[str], bool] | None = None) -> None:
        self.settler = settler
        self.backend = settler.backend
        self.acker = settler.acker
        self.chain = list(chain)
        self.runner = runner
        self.pod = pod
        self.shard_url = shard_url
        self.redis_url: str | None = getattr(self.backend, "url", None)
        self.stops = stops if stops is not None else StopSignals()
        #: process isolation: tells the child running the job to stop (ctx.stopping there)
        self.interrupt = interrupt
        #: the last check before a job reserved by worker id `owner` runs: is that id still
        #: this worker's, and not reaped (the worker asks Redis after a pause)?
        self.may_start: Callable[[str], bool] = may_start or (lambda owner: True)
        self._jobs = registered()
        self._plans: dict[tuple[str, int], Plan] = {}

    def plan(self, jd: JobDef, shape: int) -> Plan:
        key = (jd.name, shape)
        p = self._plans.get(key)
        if p is None:
            p = self._plans[key] = Plan(self.chain, jd, shape)
        return p

    def execute(self, queue: str, raw: bytes, owner: str) -> Outcome | None:
        """Run and settle one payload reserved from `queue` by worker id `owner`. Returns
        the outcome (None when not run)."""
        try:
            d = open_delivery(raw, queue, owner)
        except BadPayload as exc:
            self.settler.dead_raw(queue, raw, owner, str(exc))
            return None
        jd = self._jobs.get(d.job)
        if jd is None:
            self._jobs = registered()
            jd = self._jobs.get(d.job)
            if jd is None:
                self._unknown_job(d)
                return None
        plan = self.plan(jd, d.shape)
        out: Outcome | None = None
        s: Settlement | None = None
        try:
            for start in plan.before_start:
                s = start(d, jd)
                if s is not None:
                    s = self._settle(d, jd, plan, s)
                    return None
            out = self._run(d, jd)
            if out is None:
                return None
            if out.ok:
                if plan.plain and not out.unfinished:
                    if d.in_flight:
                        self.acker.add(queue, d.id, owner)
                    return out
                s = Settlement(Kind.ACK, d.id, d.in_flight, result=out.result,
                               finished=not out.unfinished, reason=out.unfinished)
                for shape_ok in plan.on_success:
                    s = shape_ok(d, jd, out, s)
            else:
                s = self._failed(d, out)
                for shape_failed in plan.on_failure:
                    s = shape_failed(d, jd, out, s)
            s = self._settle(d, jd, plan, s)
            return out
        finally:
            for after in plan.after_settle:
                after(d, jd, out, s)

    def _run(self, d: Delivery, jd: JobDef) -> Outcome | None:
        stopping = self.stops.register(d.id, d.tenant, self.interrupt)
        ctx = Context(d.id, jd.name, d.attempt, d.queue, d.enqueued_at, tenant=d.tenant,
                      pod=self.pod or d.pod, worker_id=d.owner, payload=d.data,
                      shard_url=self.shard_url, stopping=stopping, redis_url=self.redis_url,
                      backend=self.backend, tenant_version=d.tenant_version)
        try:
            # stamped before the check: a pause after it makes a late start, never a wrong one
            claimed = time.monotonic()
            if d.in_flight and not self.may_start(d.owner):
                # the generation that reserved it was reaped meanwhile (the thread was paused
                # between the worker's first check and here): the job is back in its queue
                log.warning("job %s from %s not started: worker %s was reaped meanwhile (or "
                            "is stopping without an answer from Redis)", d.id, d.queue, d.owner)
                return None
            ctx.claimed_at = claimed
            t0 = time.perf_counter()
            out = self.runner(jd, ctx, d.args, d.kwargs)
            out.duration = time.perf_counter() - t0
            return out
        finally:
            self.stops.unregister(d.id)

    @staticmethod
    def _failed(d: Delivery, out: Outcome) -> Settlement:
        """A failed run's settlement before the chain shapes it: put back when the job asked
        for it (podjobs.Reenqueue), else dead with the failure as reason (the retries link
        makes it a retry while retries remain)."""
        if out.failure is Failure.REENQUEUE:
            nxt = dict(d.data)
            nxt.update(out.updates or {})
            return Settlement(Kind.REENQUEUE, d.id, d.in_flight, delay_ms=int(out.delay * 1000),
                              payload=encode(nxt, 1 << 30), reason=out.message or "reenqueued")
        return Settlement(Kind.DEAD, d.id, d.in_flight,
                          reason=out.failure.value if out.failure else "error", error=out.error_dict())

    def _settle(self, d: Delivery, jd: JobDef, plan: Plan, s: Settlement) -> Settlement:
        if s.kind is Kind.NONE:
            return s
        for hook in plan.before_settle:
            s = hook(d, jd, s)
        self.settler.settle(d, s)
        return s

    def _unknown_job(self, d: Delivery) -> None:
        s = Settlement(Kind.DEAD, d.id, reason="unknown_job", error={
            "class": "UnknownJob", "trace": "",
            "message": f"no job named {d.job!r} is registered in this worker; deploy the code "
                       f"that defines it, then retry from the dead set"})
        plan = self.plan(UNKNOWN, d.shape)
        try:
            s = self._settle(d, UNKNOWN, plan, s)
        finally:
            for after in plan.after_settle:
                after(d, UNKNOWN, None, s)

    def unsettled(self, queue: str, raw: bytes, owner: str, exc: BaseException) -> None:
        """`execute` raised: see podjobs.settler.Settler.unsettled."""
        self.settler.unsettled(queue, raw, owner, exc)
