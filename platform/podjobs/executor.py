"""Running one reserved job and settling it: ack, retry with backoff, or dead.

1. Decode and check the payload and every field of it once (podjobs.payload.decode); a
   payload that fails (reason malformed, its raw text kept) or names an unknown job goes
   to the dead set once, and the worker goes on.
2. at-most-once jobs are acked before they run (and never retried).
3. Run the job (inline in this thread, or through a process-isolation child),
   then settle the outcome: success acks (batched, or one call when the job has
   chained follow-ups or a unique key); a failure retries later with backoff or,
   once retries are spent, goes to the dead set with its last error.
4. A tracked job (payload member "track", see podjobs.status) also has its status record
   written: its start and its success go through the acker's batches (starts first), any
   other settlement carries the record's new state in the script that makes it (after a
   flush of the acker, so that the job's start is written before).
5. A delivery that ends without the job finishing (`podjobs.invoke.Unfinished`: an
   iteration job paused, superseded, cancelled, or a duplicate of a finished one) is acked
   without follow-ups and never marked succeeded.
6. Every settlement addresses the in-flight hash of the worker generation that reserved
   the job (`owner`, see podjobs.identity). A settlement Redis cannot take (unreachable,
   or "may or may not") is tried again with backoff while that generation is current:
   each settle script acts only on a job still in flight, so repeating it is safe; once
   the generation was reaped the job is back in its queue and nothing is left to settle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from podjobs import backoff as backoff_mod
from podjobs import status as status_mod
from podjobs.acker import Acker
from podjobs.backend import Backend
from podjobs.context import Context
from podjobs.errors import BackendTimeout, BackendUnavailable
from podjobs.ids import new_id
from podjobs.invoke import Failure, Outcome, invoke
from podjobs.jobs import Delivery, JobDef, registered
from podjobs.payload import BadPayload, decode, encode, inflight_field
from podjobs.stops import StopSignals

T = TypeVar("T")
#: a job whose settlement failed outside Redis (another pod unreachable) runs again after this
UNSETTLED_DELAY_MS = 5_000
#: seconds between attempts of a settlement Redis could not take (doubling up to the max)
SETTLE_RETRY_S = 0.1
SETTLE_RETRY_MAX_S = 5.0

log = logging.getLogger("podjobs.executor")

#: runs a job somewhere (this thread, or a child process) and says what happened
Runner = Callable[[JobDef, Context, list[Any], dict[str, Any]], Outcome]


@dataclass(frozen=True)
class Forward:
    """The job's tenant lives on another pod: send the job there, do not run it here.
    `hold`: the tenant is being moved to that pod; the job waits there until the move ends."""

    pod: str
    hold: bool = False


@dataclass(frozen=True)
class Admit:
    """Run the job here. `version`: the directory version of the tenant's entry that
    admitted it; its shard commits are refused once the tenant's move fence is larger."""

    version: int


@dataclass(frozen=True)
class Refuse:
    """The job must not run anywhere (for example its tenant is unknown): dead set."""

    reason: str
    message: str


@dataclass(frozen=True)
class Defer:
    """Not now (for example the directory may be stale): put the job back for later."""

    delay: float
    reason: str


class TenantRoute(Protocol):
    """Pod-aware workers: decides where a tenant's job belongs (see podjobs.pods.tenantcheck)."""

    def check(self, data: dict[str, Any]) -> Admit | Forward | Refuse | Defer | None:
        """Before the job runs: None or Admit = run here (and `done` follows), else where it goes."""

    def done(self, data: dict[str, Any]) -> None:
        """After a job that `check` let run here has been settled."""

    def forward(self, decision: Forward, queue: str, data: dict[str, Any],
                status: status_mod.StatusWrite | None = None) -> None:
        """Write the job to the pod `decision` names (`status`: a tracked job's record
        there, written with it)."""

_NO_RETRY = (Failure.ARGUMENTS, Failure.REFUSED)


class Executor:
    """Settles jobs for one worker; shared by all its executor threads."""

    def __init__(self, backend: Backend, worker_id: str, acker: Acker, *,
                 runner: Runner = invoke, pod: str | None = None, shard_url: str | None = None,
                 route: TenantRoute | None = None, stops: StopSignals | None = None,
                 interrupt: Callable[[], None] | None = None,
                 current_id: Callable[[], str] | None = None,
                 may_start: Callable[[str], bool] | None = None) -> None:
        self.shard_url = shard_url
        self.route = route
        self.stops = stops if stops is not None else StopSignals()
        #: process isolation: tells the child running the job to stop (ctx.stopping there)
        self.interrupt = interrupt
        self.backend = backend
        #: the worker generation that reserved the job being settled (set by execute)
        self.worker_id = worker_id
        #: the worker's current id: a settlement is retried only while it is its owner's
        self.current_id = current_id if current_id is not None else (lambda: self.worker_id)
        #: the last check before a job reserved by worker id `owner` runs: is that id still
        #: this worker's, and not reaped (the worker asks Redis after a pause)?
        self.may_start: Callable[[str], bool] = may_start or (lambda owner: True)
        self._wait = threading.Event().wait
        self.acker = acker
        self.runner = runner
        self.pod = pod
        self._jobs = registered()

    def execute(self, queue: str, raw: bytes, owner: str | None = None) -> Outcome | None:
        """Run and settle one payload reserved by worker id `owner` (this worker's id when
        None). Returns the outcome (None when not run)."""
        if owner is not None:
            self.worker_id = owner
        try:
            data = decode(raw)
        except BadPayload as exc:
            self._dead_raw(queue, raw, str(exc))
            return None
        jd = self._jobs.get(data["job"])
        if jd is None:
            self._jobs = registered()
            jd = self._jobs.get(data["job"])
            if jd is None:
                self._settle_dead(queue, data, True, "unknown_job",
                                  {"class": "UnknownJob", "message":
                                   f"no job named {data['job']!r} is registered in this worker; "
                                   f"deploy the code that defines it, then retry from the dead set"})
                return None
        if self.route is not None and "tenant" in data:
            decision = self.route.check(data)
            if decision is not None and not isinstance(decision, Admit):
                self._reroute(queue, data, decision, jd)
                return None
            try:
                return self._execute(queue, data, jd, decision.version if decision else None)
            finally:
                self.route.done(data)
        return self._execute(queue, data, jd)

    def _execute(self, queue: str, data: dict[str, Any], jd: JobDef,
                 tenant_version: int | None = None) -> Outcome | None:
        jid = data["id"]
        in_flight = True
        if jd.options.delivery is Delivery.AT_MOST_ONCE:
            # a lost reply makes this None: the job is not run (at most once)
            if not self._persist("ack an at-most-once job before it runs", jid, False,
                                 lambda: self.backend.ack(self.worker_id, {queue: [jid]})):
                return None  # no longer ours: another worker took it over
            in_flight = False
        tracked = "track" in data
        attempt = int(data.get("attempt", 0)) + 1
        if tracked:
            self.acker.started(queue, jid, in_flight, status_mod.started(data, self.worker_id, attempt),
                               self.worker_id)
        stopping = self.stops.register(jid, data.get("tenant"), self.interrupt)
        ctx = Context(jid, jd.name, attempt, queue,
                      int(data.get("enqueued_at", 0)), data.get("tenant"),
                      self.pod or data.get("pod"), self.worker_id, data, self.shard_url,
                      stopping, getattr(self.backend, "url", None), self.backend, tenant_version)
        try:
            # stamped before the check: a pause after it makes a late start, never a wrong one
            claimed = time.monotonic()
            if in_flight and not self.may_start(self.worker_id):
                # the generation that reserved it was reaped meanwhile (the thread was paused
                # between the worker's first check and here): the job is back in its queue
                log.warning("job %s from %s not started: worker %s was reaped meanwhile (or "
                            "is stopping without an answer from Redis)", jid, queue, self.worker_id)
                return None
            ctx.claimed_at = claimed
            out = self.runner(jd, ctx, data["args"], data["kwargs"])
        finally:
            self.stops.unregister(jid)
        if out.ok and out.unfinished:
            self._settle_unfinished(queue, data, out.unfinished, in_flight, tracked)
        elif out.ok:
            if "then" in data or "unique" in data:
                if tracked:
                    self.acker.flush()
                self._ack_one(queue, data, in_flight,
                              status_mod.succeeded(data, out.result) if tracked else None)
            elif tracked:
                self.acker.add_tracked(queue, jid, status_mod.succeeded(data, out.result), in_flight,
                                       self.worker_id)
            elif in_flight:
                self.acker.add(queue, jid, self.worker_id)
        else:
            if tracked:
                self.acker.flush()
            self._settle_failure(queue, jd, data, out, in_flight)
        return out

    # -- settling -------------------------------------------------------------------

    def _reroute(self, queue: str, data: dict[str, Any], decision: Forward | Refuse | Defer,
                 jd: JobDef) -> None:
        tracked = "track" in data
        if isinstance(decision, Defer):
            log.info("job %s %s of tenant %s deferred %.1f s: %s", data["job"], data["id"],
                     data.get("tenant"), decision.delay, decision.reason)
            text = encode(data, 1 << 30)
            st = status_mod.requeued(data, "deferred") if tracked else None
            self._persist("put a deferred job back", data["id"], True, lambda: self.backend.reenqueue(
                self.worker_id, queue, data["id"], int(decision.delay * 1000), text, True, st))
            return
        if isinstance(decision, Refuse):
            self._settle_dead(queue, data, True, decision.reason,
                              {"class": "WrongPod", "message": decision.message})
            return
        assert self.route is not None
        fwd = dict(data)
        fwd["pod"] = decision.pod
        fwd["forwarded_from"] = self.pod
        # written there first: a crash now duplicates, never loses. A tracked job's record is
        # written there with it (queued), and the one here says where it went (reason moved)
        self.route.forward(decision, queue, fwd,
                           status_mod.forwarded(fwd, jd.options.retries + 1) if tracked else None)
        if tracked:
            st = status_mod.moved_away(data, decision.pod)
            self._persist("ack a forwarded job", data["id"], True, lambda: self.backend.ack_one(
                self.worker_id, queue, data["id"], None, [], True, st))
        else:
            self._persist("ack a forwarded job", data["id"], True,
                          lambda: self.backend.ack(self.worker_id, {queue: [data["id"]]}))
        log.info("job %s %s of tenant %s %s from pod %s to %s", data["job"], data["id"],
                 data.get("tenant"), "held for a move" if decision.hold else "forwarded",
                 self.pod, decision.pod)

    def _ack_one(self, queue: str, data: dict[str, Any], in_flight: bool,
                 status: status_mod.StatusWrite | None = None) -> None:
        now = time.time_ns() // 1_000_000
        children = []
        for child in data.get("then", ()):
            child = dict(child)
            child["enqueued_at"] = now
            children.append((child["queue"], encode(child)))
        self._persist("ack a job", data["id"], in_flight, lambda: self.backend.ack_one(
            self.worker_id, queue, data["id"], data.get("unique"), children, in_flight, status))

    def _settle_unfinished(self, queue: str, data: dict[str, Any], state: str, in_flight: bool,
                           tracked: bool) -> None:
        """The delivery is over, the job is not finished (podjobs.invoke.Unfinished): ack it
        without its follow-ups; release its unique key only when it was cancelled (a paused
        job is still pending); a tracked job's record says what happened (status.unfinished)."""
        st = status_mod.unfinished(data, state, self.worker_id) if tracked else None
        unique = data.get("unique") if state == "cancelled" else None
        if st is None and unique is None:
            if in_flight:
                self.acker.add(queue, data["id"], self.worker_id)
            return
        if tracked:
            self.acker.flush()  # the job's start first: the record must say running on us
        self._persist("ack an unfinished job", data["id"], in_flight, lambda: self.backend.ack_one(
            self.worker_id, queue, data["id"], unique, [], in_flight, st))

    def _settle_failure(self, queue: str, jd: JobDef, data: dict[str, Any], out: Outcome,
                        in_flight: bool) -> None:
        if out.failure is Failure.REENQUEUE:
            nxt = dict(data)
            nxt.update(out.updates or {})
            st = status_mod.requeued(data, out.message or "reenqueued") if "track" in data else None
            text = encode(nxt, 1 << 30)
            self._persist("put a job back", data["id"], in_flight, lambda: self.backend.reenqueue(
                self.worker_id, queue, data["id"], int(out.delay * 1000), text, in_flight, st))
            return
        attempt = int(data.get("attempt", 0)) + 1
        err = out.error_dict()
        if out.failure in _NO_RETRY:
            self._settle_dead(queue, data, in_flight, str(out.failure.value if out.failure else "error"), err)
            return
        if jd.options.delivery is Delivery.AT_MOST_ONCE:
            self._settle_dead(queue, data, in_flight, "at_most_once_failed", err)
            return
        decision = backoff_mod.decide(attempt, jd.options.retries, jd.options.backoff)
        if isinstance(decision, backoff_mod.GiveUp):
            self._settle_dead(queue, data, in_flight, "retries_exhausted", err)
            return
        nxt = dict(data)
        nxt["attempt"] = attempt
        nxt["error"] = err
        nxt["failure"] = out.failure.value if out.failure else "error"
        nxt["failed_at"] = time.time_ns() // 1_000_000
        log.info("job %s %s failed (attempt %d, %s: %s); retry in %.1f s", jd.name, data["id"],
                 attempt, err["class"], err["message"][:200], decision.delay_s)
        st = status_mod.retrying(data, attempt, err) if "track" in data else None
        text = encode(nxt, 1 << 30)
        self._persist("schedule a retry", data["id"], in_flight, lambda: self.backend.retry(
            self.worker_id, queue, data["id"], int(decision.delay_s * 1000), text, in_flight, st))

    def _settle_dead(self, queue: str, data: dict[str, Any], in_flight: bool, reason: str,
                     err: dict[str, str]) -> None:
        dead = dict(data)
        dead["dead_reason"] = reason
        dead["error"] = err
        dead["died_at"] = time.time_ns() // 1_000_000
        dead["attempt"] = int(data.get("attempt", 0)) + 1
        log.warning("job %s %s is dead (%s): %s", data.get("job"), data.get("id"), reason,
                    err.get("message", "")[:300])
        st = status_mod.ended(data, reason, err, dead["attempt"]) if "track" in data else None
        text = encode(dead, 1 << 30)
        self._persist("move a job to the dead set", data["id"], True, lambda: self.backend.dead(
            self.worker_id, queue, data["id"], text, in_flight, data.get("unique"), st))

    def _dead_raw(self, queue: str, raw: bytes, reason: str, kind: str = "malformed",
                  error_class: str = "BadPayload") -> None:
        """A payload that is not a job podjobs can run (or could not be settled): to the dead
        set once, its raw text kept, found in flight under the field reserve.lua gave it."""
        field = inflight_field(raw)
        text = raw.decode("utf-8", "replace")
        dead: dict[str, Any] = {"id": field if len(field) == 26 else new_id(), "job": None, "queue": queue,
                "args": [], "kwargs": {}, "raw": text[:65536], "dead_reason": kind,
                "error": {"class": error_class, "message": reason, "trace": ""},
                "died_at": time.time_ns() // 1_000_000}
        log.warning("payload %s on queue %s is dead (%s): %s", field, queue, kind, reason)
        body = encode(dead, 1 << 30)
        self._persist("move a payload to the dead set", field, True,
                      lambda: self.backend.dead(self.worker_id, queue, field, body, True))

    def unsettled(self, queue: str, raw: bytes, exc: BaseException) -> None:
        """`execute` raised: the job's outcome could not be recorded. Never straight back for
        an immediate re-run: a job another server refused (a pod to forward to is down) is
        put back after UNSETTLED_DELAY_MS; anything else (a bug, a late JobTimeout) goes to
        the dead set once, reason settle_failed, to be retried from there."""
        key = inflight_field(raw)
        if isinstance(exc, BackendUnavailable):
            log.warning("could not settle job %s from %s (%s: %s); it runs again in %.0f s", key,
                        queue, type(exc).__name__, exc, UNSETTLED_DELAY_MS / 1000)
            text = raw.decode("utf-8", "replace")
            self._persist("put a job back", key, True, lambda: self.backend.reenqueue(
                self.worker_id, queue, key, UNSETTLED_DELAY_MS, text, True))
            return
        log.error("could not settle job %s from %s", key, queue, exc_info=exc)
        self._dead_raw(queue, raw, f"could not be settled: {type(exc).__name__}: {exc}",
                       "settle_failed", type(exc).__name__)

    def _persist(self, what: str, job_id: str, repeatable: bool, call: Callable[[], T]) -> T | None:
        """Make a settlement: while Redis cannot take it, try again with backoff, as long as
        the worker generation that reserved the job is current (after a reap the job is back
        in its queue). A call that is not `repeatable` (at-most-once: not guarded by the
        in-flight hash) is not sent again after a "may or may not"; None then."""
        delay = SETTLE_RETRY_S
        while True:
            try:
                return call()
            except BackendTimeout as exc:
                if not repeatable:
                    log.error("could not %s for job %s (%s); not trying again (at most once)",
                              what, job_id, exc)
                    return None
                err: Exception = exc
            except BackendUnavailable as exc:
                err = exc
            if self.current_id() != self.worker_id:
                log.warning("could not %s for job %s (%s); worker %s was reaped meanwhile, so "
                            "the job is back in its queue", what, job_id, err, self.worker_id)
                return None
            log.warning("could not %s for job %s (%s); trying again in %.1f s", what, job_id,
                        err, delay)
            self._wait(delay)
            delay = min(SETTLE_RETRY_MAX_S, delay * 2)
