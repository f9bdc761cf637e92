"""Jobs the benchmarks run in real worker processes."""

from __future__ import annotations

import os
import time

import redis

import podjobs

_r: redis.Redis | None = None


@podjobs.job(name="bench.noop", queue="bench", api=True)
def noop(i: int) -> None:
    pass


@podjobs.job(name="bench.latency", queue="latency")
def latency(ctx: podjobs.Context, sent_ns: int) -> None:
    global _r
    now = time.time_ns()
    if _r is None:
        _r = redis.Redis.from_url(os.environ["PODJOBS_BENCH_RECORD_URL"])
    _r.rpush("bench:latency", now - sent_ns)


@podjobs.job(name="bench.fair.noop", queue="fair")
def fair_noop(i: int) -> None:
    pass


@podjobs.job(name="bench.fair.small", queue="fair")
def fair_small(sent_ns: int) -> None:
    """The small tenant's job (bench/fairness.py): records its enqueue-to-start time."""
    global _r
    now = time.time_ns()
    if _r is None:
        _r = redis.Redis.from_url(os.environ["PODJOBS_BENCH_RECORD_URL"])
    _r.rpush("bench:fair:lat", now - sent_ns)
