"""Dramatiq side of `bench.peers` (RedisBroker at its defaults)."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peerapps import common

broker = RedisBroker(url=common.URL)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="peers")
def incr() -> None:
    common.incr()


@dramatiq.actor(queue_name="peers")
def probe(sent_ns: int) -> None:
    common.probe(sent_ns)


def setup() -> None:
    pass


def enqueue_one() -> None:
    incr.send()


def enqueue_bulk(n: int) -> bool:
    return False  # no bulk enqueue in Dramatiq (a group sends each message on its own)


def enqueue_probe(sent_ns: int) -> None:
    probe.send(sent_ns)
