"""The scheduled-job poller: moves due scheduled jobs and retries into their queues.

Every `interval` seconds (with jitter, so many workers spread out) it calls
promote.lua for the worker's queues; due is judged on Redis' clock.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Sequence

from podjobs.backend import Backend

log = logging.getLogger("podjobs.poller")


class Poller:
    def __init__(self, backend: Backend, queues: Sequence[str], interval_s: float) -> None:
        self.backend = backend
        self.queues = list(queues)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="podjobs-poller", daemon=True)

    def start(self) -> None:
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
        while not self._stop.wait(self.interval_s * (0.5 + random.random())):
            try:
                self.poll_once()
            except Exception as exc:  # never let the poller die
                log.warning("promoting due jobs failed (%s: %s)", type(exc).__name__, exc)
