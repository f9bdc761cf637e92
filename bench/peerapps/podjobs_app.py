"""podjobs side of `bench.peers`: the two jobs and the enqueue calls."""

from __future__ import annotations

import podjobs
from bench.peerapps import common


@podjobs.job(name="peers.incr", queue="peers")
def incr() -> None:
    common.incr()


@podjobs.job(name="peers.probe", queue="peers")
def probe(sent_ns: int) -> None:
    common.probe(sent_ns)


def setup() -> None:
    podjobs.configure(common.URL)


def enqueue_one() -> None:
    incr.enqueue()


def enqueue_bulk(n: int) -> bool:
    for i in range(0, n, 10_000):
        incr.enqueue_many([() for _ in range(min(10_000, n - i))])
    return True


def enqueue_probe(sent_ns: int) -> None:
    probe.enqueue(sent_ns)
