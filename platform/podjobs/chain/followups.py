"""Chained follow-ups (`call.then(...)`) and unique keys (`@job(unique_for=...)`).

- a job that finished: its follow-ups are enqueued and its unique key released by the
  same script that acks it (ack_one.lua), so a crash never leaves one without the other;
- a dead job releases its unique key (an identical job may be enqueued again);
- a retry or a put-back keeps it (the job is still pending), and a delivery that ended
  unfinished keeps it too (an iteration job paused; see podjobs.iteration.unfinished for
  a cancelled one).
"""

from __future__ import annotations

import time

from podjobs.delivery import FOLLOWUPS, UNIQUE, Delivery
from podjobs.invoke import Outcome
from podjobs.jobs import JobDef
from podjobs.middleware import Middleware
from podjobs.payload import encode
from podjobs.settlement import Kind, Settlement


class FollowUps(Middleware):
    def wants(self, jd: JobDef, shape: int) -> bool:
        return bool(shape & (FOLLOWUPS | UNIQUE))

    def on_success(self, d: Delivery, jd: JobDef, out: Outcome, s: Settlement) -> Settlement:
        if not s.finished:
            return s
        now = time.time_ns() // 1_000_000
        for child in d.then:
            child = dict(child)
            child["enqueued_at"] = now
            s.children.append((child["queue"], encode(child)))
        s.unique = d.unique
        return s

    def before_settle(self, d: Delivery, jd: JobDef, s: Settlement) -> Settlement:
        if s.kind is Kind.DEAD:
            s.unique = d.unique
        return s
