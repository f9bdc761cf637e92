"""Jobs the core tests run in real worker processes. Each records what it did in
Redis (the URL in $PODJOBS_RECORD_URL) so the test can count runs."""

from __future__ import annotations

import os
import time

import redis

import podjobs

_r: redis.Redis | None = None


def rec() -> redis.Redis:
    global _r
    if _r is None:
        _r = redis.Redis.from_url(os.environ["PODJOBS_RECORD_URL"])
    return _r


@podjobs.job(name="t.record", queue="default")
def record(ctx: podjobs.Context, tag: str, sleep: float = 0.0) -> None:
    rec().rpush("rec:started", tag)
    if sleep:
        time.sleep(sleep)
    rec().rpush("rec:done", tag)
    rec().hincrby("rec:count", tag, 1)


@podjobs.job(name="t.fail_times", queue="default", retries=3, backoff=podjobs.constant(0.05))
def fail_times(ctx: podjobs.Context, tag: str, times: int) -> None:
    n = rec().hincrby("rec:attempts", tag, 1)
    if n <= times:
        raise RuntimeError(f"planned failure {n} of {times}")
    rec().rpush("rec:done", tag)


@podjobs.job(
    name="t.sleepy", queue="default", timeout=1.0, retries=1, backoff=podjobs.constant(0.05)
)
def sleepy(ctx: podjobs.Context, tag: str, seconds: float) -> None:
    rec().rpush("rec:started", f"{tag}:{ctx.attempt}")
    time.sleep(seconds)
    rec().rpush("rec:done", f"{tag}:{ctx.attempt}")


@podjobs.job(name="t.loop", queue="default", timeout=0.5, retries=1, backoff=podjobs.constant(0.05))
def loop(ctx: podjobs.Context, tag: str, seconds: float) -> None:
    """Python code running past its timeout (short sleeps: the timeout lands between them)."""
    rec().rpush("rec:started", f"{tag}:{ctx.attempt}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    rec().rpush("rec:done", f"{tag}:{ctx.attempt}")


@podjobs.job(name="t.resumable", queue="default")
def resumable(ctx: podjobs.Context, tag: str, steps: int) -> None:
    """Steps with a checkpoint after each; on worker shutdown it asks to be put back."""
    start = int(ctx.payload.get("cursor", 0))
    rec().rpush("rec:attempts:" + tag, f"{ctx.attempt}:{start}")
    for i in range(start, steps):
        rec().rpush("rec:steps:" + tag, i)
        time.sleep(0.01)
        if ctx.stopping.is_set():
            raise podjobs.Reenqueue(updates={"cursor": i + 1})
    rec().rpush("rec:done", tag)


@podjobs.job(name="t.hog", queue="default", retries=0, max_memory_mb=150)
def hog(ctx: podjobs.Context, mb: int) -> None:
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(2)


@podjobs.job(name="t.once", queue="default", delivery="at_most_once")
def once(ctx: podjobs.Context, tag: str, sleep: float = 0.0) -> None:
    rec().hincrby("rec:count", tag, 1)
    if sleep:
        time.sleep(sleep)
    if tag.startswith("fail"):
        raise RuntimeError("at-most-once failure")


@podjobs.job(name="t.ledger", queue="default")
def ledger(ctx: podjobs.Context, tag: str, sleep: float = 0.0) -> None:
    """Records 'tag pid' when it starts and counts its finishes (delivery fault tests)."""
    rec().rpush("rec:starts", f"{tag} {os.getpid()}")
    if sleep:
        time.sleep(sleep)
    rec().hincrby("rec:count", tag, 1)
