"""arq side of `bench.peers` (WorkerSettings at their defaults; async jobs on ctx['redis'])."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings

from bench.peerapps import common


async def incr(ctx: dict[str, Any]) -> None:
    r = ctx["redis"]
    v = await r.incr(common.COUNTER)
    if v == 1:
        await r.set(common.FIRST, repr(time.time()))
        if common.EXIT_AT_FIRST:
            os._exit(0)
    if v == common.N:
        await r.set(common.LAST, repr(time.time()))


async def probe(ctx: dict[str, Any], sent_ns: int) -> None:
    now = time.time_ns()
    p = ctx["redis"].pipeline(transaction=False)
    p.rpush(common.LAT, now - sent_ns)
    p.lpush(common.DONE, 1)
    await p.execute()


class WorkerSettings:
    functions = [incr, probe]
    redis_settings = RedisSettings.from_dsn(common.URL)


_loop = asyncio.new_event_loop()
_pool: Any = None


def setup() -> None:
    global _pool
    _pool = _loop.run_until_complete(create_pool(RedisSettings.from_dsn(common.URL)))


def enqueue_one() -> None:
    _loop.run_until_complete(_pool.enqueue_job("incr"))


async def _many(n: int) -> None:
    for _ in range(n):
        await _pool.enqueue_job("incr")


def enqueue_single_loop(n: int) -> None:
    """One awaited call a job inside one event loop (arq's natural client loop)."""
    _loop.run_until_complete(_many(n))


def enqueue_bulk(n: int) -> bool:
    return False  # no bulk enqueue in arq


def enqueue_probe(sent_ns: int) -> None:
    _loop.run_until_complete(_pool.enqueue_job("probe", sent_ns))
