"""A worker's identity in Redis, renewed each time the worker is found reaped.

1. A worker starts as `host:pid:token` (generation 1). Its in-flight hashes, heartbeat
   key and registration are all named by that id.
2. When a worker learns that it was reaped (a pause past its heartbeat TTL: its jobs went
   back to the queues and may run elsewhere), it does not come back under the same name:
   `renew(seen)` moves it to generation n+1 (`host:pid:token.n`). Every reservation
   remembers the id it was made under, so a job reserved by an earlier generation is never
   started, and a late ack or retry of such a job addresses that generation's (gone)
   in-flight hash, never the new one, even when the same job is reserved again here.
3. `renew` takes the id the caller saw refused: several threads noticing the same reap
   renew once. The new id is registered in Redis before anyone can read it, so no thread
   uses an id Redis does not know yet (a reserve with it would look like another reap).

State machine (one worker process):

    gen 1 registered ──reaped (found by a beat, a reserve or a start check)──▶ gen 2 registered ──▶ ...
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("podjobs.worker")


class Identity:
    def __init__(self, base: str) -> None:
        self.base = base
        self.generation = 1
        #: the current id; reads need no lock (a str swap is atomic)
        self.id = base
        self._lock = threading.Lock()

    def renew(self, seen: str, register: Callable[[str], None]) -> bool:
        """The id `seen` was found reaped: `register` the next generation's id, then make it
        current, unless another thread did already. True when this call renewed. When
        `register` raises, nothing changes (the next caller that sees the reap tries again)."""
        with self._lock:
            if self.id != seen:
                return False
            nxt = f"{self.base}.{self.generation + 1}"
            register(nxt)
            self.generation += 1
            self.id = nxt
        log.warning("worker %s was reaped (paused past its heartbeat TTL; its jobs went back to "
                    "their queues); it goes on as %s", seen, self.id)
        return True

    def __str__(self) -> str:
        return self.id
