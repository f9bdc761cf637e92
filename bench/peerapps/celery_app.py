"""Celery side of `bench.peers` (Redis broker, no result backend: its defaults)."""

from __future__ import annotations

from celery import Celery

from bench.peerapps import common

app = Celery("peers", broker=common.URL)


@app.task(name="peers.incr")
def incr() -> None:
    common.incr()


@app.task(name="peers.probe")
def probe(sent_ns: int) -> None:
    common.probe(sent_ns)


def setup() -> None:
    pass


def enqueue_one() -> None:
    incr.delay()


def enqueue_bulk(n: int) -> bool:
    return False  # no bulk enqueue in Celery (a group publishes each message on its own)


def enqueue_probe(sent_ns: int) -> None:
    probe.delay(sent_ns)
