"""Sending settlements: one worker's link between the chain's decisions and Redis.

1. A plain success (podjobs.settlement `batched()`) goes to the acker, which sends many
   in one round trip; every other settlement is one `Backend.settle` call (one script).
   A tracked job's start is buffered in the acker: before a settlement carrying a status
   write is sent alone, the acker is flushed, so the start is never written after the end.
2. Every settlement addresses the in-flight hash of the worker generation that reserved
   the job (`Delivery.owner`, see podjobs.identity). One Redis cannot take (unreachable,
   or "may or may not") is tried again with backoff while that generation is current: each
   settle script acts only on a job still in flight, so repeating it is safe; once the
   generation was reaped the job is back in its queue and nothing is left to settle. An
   at-most-once job's (not in flight any more) is never sent twice.
3. A payload that is not a job podjobs can run goes to the dead set once, raw text kept
   (`dead_raw`); a delivery whose settlement raised is never put straight back for an
   immediate re-run (`unsettled`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from podjobs.acker import Acker
from podjobs.backend import Backend
from podjobs.delivery import Delivery
from podjobs.errors import BackendTimeout, BackendUnavailable
from podjobs.ids import new_id
from podjobs.payload import encode, inflight_field
from podjobs.settlement import Kind, Settlement

T = TypeVar("T")
#: a job whose settlement failed outside Redis (another pod unreachable) runs again after this
UNSETTLED_DELAY_MS = 5_000
#: seconds between attempts of a settlement Redis could not take (doubling up to the max)
SETTLE_RETRY_S = 0.1
SETTLE_RETRY_MAX_S = 5.0

log = logging.getLogger("podjobs.executor")

_WHAT = {Kind.ACK: "ack a job", Kind.RETRY: "schedule a retry", Kind.REENQUEUE: "put a job back",
         Kind.DEAD: "move a job to the dead set", Kind.FORWARD: "ack a forwarded job",
         Kind.HOLD: "ack a job sent to be held"}


class Settler:
    """Sends one worker's settlements (see the module docstring); shared by its executors."""

    def __init__(self, backend: Backend, acker: Acker, current_id: Callable[[], str]) -> None:
        self.backend = backend
        self.acker = acker
        #: the worker's current id: a settlement is retried only while it is its owner's
        self.current_id = current_id
        self._wait = threading.Event().wait

    def settle(self, d: Delivery, s: Settlement) -> None:
        """Send `s`, the end of delivery `d` (batched when it can be)."""
        if s.batched():
            if s.status is not None:
                self.acker.add_tracked(d.queue, d.id, s.status, s.in_flight, d.owner)
            elif s.in_flight:
                self.acker.add(d.queue, d.id, d.owner)
            return
        if s.kind is Kind.NONE:
            return
        if s.kind is Kind.DEAD and not s.payload:
            s.payload = self.dead_payload(d, s)
        if s.status is not None:
            self.acker.flush()  # the job's start first: the record must say running on us
        repeatable = s.in_flight or s.kind is Kind.DEAD
        self.persist(_WHAT[s.kind], d.id, d.owner, repeatable,
                     lambda: self.backend.settle(d.owner, d.queue, s))

    @staticmethod
    def dead_payload(d: Delivery, s: Settlement) -> str:
        dead = dict(d.data)
        dead["dead_reason"] = s.reason
        dead["error"] = s.error or {}
        dead["died_at"] = time.time_ns() // 1_000_000
        dead["attempt"] = d.attempt
        log.warning("job %s %s is dead (%s): %s", d.job, d.id, s.reason,
                    (s.error or {}).get("message", "")[:300])
        return encode(dead, 1 << 30)

    def dead_raw(self, queue: str, raw: bytes, owner: str, reason: str, kind: str = "malformed",
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
        s = Settlement(Kind.DEAD, field, payload=body)
        self.persist("move a payload to the dead set", field, owner, True,
                     lambda: self.backend.settle(owner, queue, s))

    def unsettled(self, queue: str, raw: bytes, owner: str, exc: BaseException) -> None:
        """Running or settling a delivery raised: its outcome could not be recorded. Never
        straight back for an immediate re-run: a job another server refused (a pod to forward
        to is down) is put back after UNSETTLED_DELAY_MS; anything else (a bug, a late
        JobTimeout) goes to the dead set once, reason settle_failed, to be retried from there."""
        key = inflight_field(raw)
        if isinstance(exc, BackendUnavailable):
            log.warning("could not settle job %s from %s (%s: %s); it runs again in %.0f s", key,
                        queue, type(exc).__name__, exc, UNSETTLED_DELAY_MS / 1000)
            text = raw.decode("utf-8", "replace")
            back = Settlement(Kind.REENQUEUE, key, delay_ms=UNSETTLED_DELAY_MS, payload=text)
            self.persist("put a job back", key, owner, True,
                         lambda: self.backend.settle(owner, queue, back))
            return
        log.error("could not settle job %s from %s", key, queue, exc_info=exc)
        self.dead_raw(queue, raw, owner, f"could not be settled: {type(exc).__name__}: {exc}",
                      "settle_failed", type(exc).__name__)

    def persist(self, what: str, job_id: str, owner: str, repeatable: bool,
                call: Callable[[], T]) -> T | None:
        """Make a settlement: while Redis cannot take it, try again with backoff, as long as
        the worker generation `owner` that reserved the job is current (after a reap the job
        is back in its queue). A call that is not `repeatable` (at-most-once: not guarded by
        the in-flight hash) is not sent again after a "may or may not"; None then."""
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
            if self.current_id() != owner:
                log.warning("could not %s for job %s (%s); worker %s was reaped meanwhile, so "
                            "the job is back in its queue", what, job_id, err, owner)
                return None
            log.warning("could not %s for job %s (%s); trying again in %.1f s", what, job_id,
                        err, delay)
            self._wait(delay)
            delay = min(SETTLE_RETRY_MAX_S, delay * 2)
