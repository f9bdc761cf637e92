"""The job bodies every system in `bench.peers` runs, and the keys they write.

Imported by each system's worker in its own venv: stdlib and redis-py only.

1. `incr()`: the drain job, one Redis INCR as the completion counter; the job
   that makes the count 1 writes its start time to FIRST, the one that makes it
   `PEERS_N` writes its end time to LAST (so a drain is timed by the jobs
   themselves, with no polling by the bench).
2. `probe(sent_ns)`: the latency job: enqueue-to-start in ns pushed to LAT, then
   a token on DONE for the bench's BLPOP (so probes follow each other on an
   idle worker without a clock).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

URL = os.environ.get("PEERS_REDIS_URL", "")
N = int(os.environ.get("PEERS_N", "0"))
#: bench.firstjob --instructions: the first job ends its process once it has stamped FIRST
EXIT_AT_FIRST = os.environ.get("PEERS_EXIT_AT_FIRST") == "1"
COUNTER = "peers:count"
FIRST = "peers:first"
LAST = "peers:last"
LAT = "peers:lat"
DONE = "peers:done"

_clients: dict[int, Any] = {}


def client() -> Any:
    """One redis-py client per process (prefork and fork workers re-create it)."""
    pid = os.getpid()
    c = _clients.get(pid)
    if c is None:
        c = _clients[pid] = redis.Redis.from_url(URL)
    return c


def incr() -> None:
    r = client()
    v = r.incr(COUNTER)
    if v == 1:
        r.set(FIRST, repr(time.time()))
        if EXIT_AT_FIRST:
            os._exit(0)
    if v == N:
        r.set(LAST, repr(time.time()))


def probe(sent_ns: int) -> None:
    now = time.time_ns()
    p = client().pipeline(transaction=False)
    p.rpush(LAT, now - sent_ns)
    p.lpush(DONE, 1)
    p.execute()
