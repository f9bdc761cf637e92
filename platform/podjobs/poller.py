"""The scheduled-job poller: moves due scheduled jobs and retries into their queues.

Every `interval` seconds (with jitter, so many workers spread out) it calls
promote.lua for the worker's queues; due is judged on Redis' clock. Its first pass runs
FIRST_PASS_DELAY_S after it starts, on its own thread, after the worker's start-up duty
(`start(first=)`, the reap of dead workers): neither waits in front of the worker's first
reservation, nor competes with its first jobs for the GIL.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence

from podjobs.backend import Backend

log = logging.getLogger("podjobs.poller")

#: the first pass's pause after start: the worker's first jobs (reserved meanwhile) go first
FIRST_PASS_DELAY_S = 0.05


class Poller:
    def __init__(self, backend: Backend, queues: Sequence[str], interval_s: float) -> None:
        self.backend = backend
        self.queues = list(queues)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._first: Callable[[], object] | None = None
        self._thread = threading.Thread(target=self._loop, name="podjobs-poller", daemon=True)

    def start(self, first: Callable[[], object] | None = None) -> None:
        """Start polling: after FIRST_PASS_DELAY_S, `first` (the worker's reap of dead
        workers) and a promote, then a promote every interval."""
        self._first = first
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def poll_once(self) -> int:
        moved = 0
        while True:
            n = self.backend.promote(self.queues, 1000)
            moved += n
            if n < 1000:
                return moved

    def _loop(self) -> None:
        if self._stop.wait(FIRST_PASS_DELAY_S):
            return
        if self._first is not None:
            try:
                self._first()
            except Exception as exc:  # the heartbeat's own reaps try again
                log.warning("recovering dead workers' jobs at start failed (%s: %s)",
                            type(exc).__name__, exc)
        self._pass()
        while not self._stop.wait(self.interval_s * (0.5 + random.random())):
            self._pass()

    def _pass(self) -> None:
        try:
            self.poll_once()
        except Exception as exc:  # never let the poller die
            log.warning("promoting due jobs failed (%s: %s)", type(exc).__name__, exc)
