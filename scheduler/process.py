"""The scheduler process: contend for leadership, and while leading run the duties.

1. `Scheduler(zk, duties, interval)`: `run(stop)` contends (see leader.py);
   each term runs every duty's `tick(term)` once per `interval` seconds until
   the term ends or `stop` is set, each duty on its own thread: a slow duty (the
   migrations duty waiting on a shard that does not answer) never makes another
   (periodic jobs) late. The leading thread itself only watches the term. A duty acts only through `term` (its
   `check()` before each action, its `transaction()` for ZooKeeper writes),
   so a deposed leader stops between two actions.
2. A duty that raises is logged and retried on the next tick; `NotLeader`
   ends the tick at once.
3. A SUSPENDED session pauses the duties; when the session comes back with
   the term's node intact they resume, else the term ends and the process
   contends again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from podjobs.pods.zk import ZK, KazooException

from .leader import Leadership, NotLeader, Term

log = logging.getLogger(__name__)

#: seconds the leading thread waits for a duty's thread when a term ends
JOIN_TIMEOUT = 60.0


class Duty(Protocol):
    """Something the leader does over and over (migrations rollout, periodic jobs)."""

    name: str

    def tick(self, term: Term) -> None:
        """Do what is due now. Check `term` before each action that changes anything."""
        ...


class Scheduler:
    """See the module docstring."""

    def __init__(self, zk: ZK, duties: Sequence[Duty], interval: float = 1.0,
                 identity: dict[str, object] | None = None) -> None:
        self.zk = zk
        self.duties = list(duties)
        self.interval = interval
        self.leadership = Leadership(zk, dict(identity or {}))
        self.led = threading.Event()

    @property
    def id(self) -> str:
        return str(self.leadership.identity["id"])

    def run(self, stop: threading.Event) -> None:
        self.leadership.run(lambda term: self._lead(term, stop), stop)

    def _lead(self, term: Term, stop: threading.Event) -> None:
        self.led.set()
        done = threading.Event()  # the term is over or the process stops: duty threads end
        threads = [threading.Thread(target=self._duty_loop, args=(duty, term, done),
                                    name=f"scheduler-{duty.name}", daemon=True)
                   for duty in self.duties]
        for t in threads:
            t.start()
        try:
            while not stop.is_set() and not term.over.is_set():
                if not term.active:
                    if self.zk.connected and self.leadership.resume_if_still_leader(term):
                        continue
                term.wait(0.1)
        finally:
            done.set()
            for t in threads:
                t.join(JOIN_TIMEOUT)
                if t.is_alive():
                    log.error("scheduler duty thread %s still busy %.0f s after the term "
                              "ended; it stops at its next term check", t.name, JOIN_TIMEOUT)

    def _duty_loop(self, duty: Duty, term: Term, done: threading.Event) -> None:
        while not done.is_set():
            if not term.active:
                done.wait(0.05)
                continue
            try:
                duty.tick(term)
            except NotLeader:
                # the session may look fine while our election node is gone (a new
                # session before LOST reached the listener): then the term is over
                try:
                    if self.zk.connected and not self.zk.exists(term.node_path):
                        term.over.set()
                        term.changed.set()
                except KazooException:
                    pass
            except KazooException as exc:
                log.warning("scheduler duty %s: ZooKeeper error %r; next tick", duty.name, exc)
            except Exception:
                log.exception("scheduler duty %s failed; next tick", duty.name)
            done.wait(self.interval)
