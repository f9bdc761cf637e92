"""RQ side of `bench.peers` (Queue at its defaults; `enqueue_many` for bulk)."""

from __future__ import annotations

from typing import Any

import redis
from rq import Queue

from bench.peerapps import common

_q: Any = None


def incr() -> None:
    common.incr()


def probe(sent_ns: int) -> None:
    common.probe(sent_ns)


def setup() -> None:
    global _q
    _q = Queue("peers", connection=redis.Redis.from_url(common.URL))


def enqueue_one() -> None:
    _q.enqueue(incr)


def enqueue_bulk(n: int) -> bool:
    for i in range(0, n, 10_000):
        _q.enqueue_many([Queue.prepare_data(incr) for _ in range(min(10_000, n - i))])
    return True


def enqueue_probe(sent_ns: int) -> None:
    _q.enqueue(probe, sent_ns)
