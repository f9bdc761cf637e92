"""Jobs for the worker signal and shutdown tests (tests/test_worker_signals.py).

Everything is recorded in Redis ($PODJOBS_RECORD_URL), in the order Redis saw it, so tests
compare orders of events, never clocks. A process-isolation child records its import
("rec:imported", then "rec:ready" with its pid) and spends $PODJOBS_TEST_IMPORT_S seconds
on it in between: a heavy app.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
import uuid

import redis

import podjobs

_r: redis.Redis | None = None


def rec() -> redis.Redis:
    global _r
    if _r is None:
        _r = redis.Redis.from_url(os.environ["PODJOBS_RECORD_URL"])
    return _r


if multiprocessing.parent_process() is not None:  # imported in a process-isolation child
    rec().rpush("rec:imported", os.getpid())
    time.sleep(float(os.environ.get("PODJOBS_TEST_IMPORT_S", "0")))
    rec().rpush("rec:ready", os.getpid())


@podjobs.job(name="s.ledger", queue="default", retries=0)
def ledger(ctx: podjobs.Context, tag: str, seconds: float, stubborn: bool = False) -> None:
    """Runs `seconds`, ignoring ctx.stopping, and writes "start RUN", "tick RUN" every
    50 ms, "end RUN" to the list rec:ledger (RUN = tag:pid:random): two runs of one job
    overlap when a tick of the first comes after the start of the second. A `stubborn`
    run also swallows SystemExit (so only SIGKILL ends its child)."""
    run = f"{tag}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    r = rec()
    r.rpush("rec:ledger", f"start {run}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            r.rpush("rec:ledger", f"tick {run}")
            time.sleep(0.05)
        except BaseException:
            if not stubborn:
                raise
            r = redis.Redis.from_url(os.environ["PODJOBS_RECORD_URL"])  # may be mid-reply
    r.rpush("rec:ledger", f"end {run}")


@podjobs.job(name="s.clinging", queue="default", retries=0)
def clinging(ctx: podjobs.Context, tag: str) -> None:
    """Leaves a non-daemon thread behind (the interpreter waits for it at exit), then runs
    like a ledger job for 60 s, ignoring ctx.stopping."""
    threading.Thread(target=time.sleep, args=(600,), name="clinging", daemon=False).start()
    ledger.fn(ctx, tag, 60)


@podjobs.job(name="s.timed", queue="default", timeout=2, retries=0)
def timed(ctx: podjobs.Context, tag: str) -> None:
    """Runs past its 2 s timeout; records when it began (ms since the epoch) and where."""
    rec().rpush("rec:timed", json.dumps({"tag": tag, "pid": os.getpid(),
                                         "started_ms": time.time_ns() // 1_000_000}))
    time.sleep(30)
