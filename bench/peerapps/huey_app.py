"""Huey side of `bench.peers` (RedisHuey at its defaults)."""

from __future__ import annotations

from huey import RedisHuey

from bench.peerapps import common

huey = RedisHuey("peers", url=common.URL)


@huey.task()
def incr() -> None:
    common.incr()


@huey.task()
def probe(sent_ns: int) -> None:
    common.probe(sent_ns)


def setup() -> None:
    pass


def enqueue_one() -> None:
    incr()


def enqueue_bulk(n: int) -> bool:
    return False  # no bulk enqueue in Huey


def enqueue_probe(sent_ns: int) -> None:
    probe(sent_ns)
