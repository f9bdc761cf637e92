"""The jobs of `make demo-sql` (demo/sql_tour.py). Workers import this module (`--app
demo.sql_app`).

Every run appends one JSON line to the file named by $PODJOBS_DEMO_RECORD_FILE (no Redis in
this tour): the job, its arguments, queue, attempt, pid, whether it succeeded and how long
after its enqueue it started.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import podjobs

#: flaky_sync fails this many attempts, then succeeds
FLAKY_FAILURES = 2


def record(ctx: podjobs.Context, args: list[Any], ok: bool = True, error: str = "") -> None:
    entry = {
        "job": ctx.job_name.rsplit(".", 1)[-1], "args": args, "queue": ctx.queue,
        "attempt": ctx.attempt, "ok": ok, "error": error, "pid": os.getpid(), "pod": ctx.pod,
        "waited_ms": int(time.time() * 1000) - ctx.enqueued_at_ms,
    }
    line = (json.dumps(entry) + "\n").encode()
    fd = os.open(Path(os.environ["PODJOBS_DEMO_RECORD_FILE"]), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)  # one write of a short line with O_APPEND: lines never interleave
    finally:
        os.close(fd)


@podjobs.job(queue="critical")
def send_receipt(ctx: podjobs.Context, order_id: int) -> None:
    record(ctx, [order_id])


@podjobs.job(queue="default")
def resize_image(ctx: podjobs.Context, image_id: int, size: str) -> None:
    time.sleep(0.002)
    record(ctx, [image_id, size])


@podjobs.job(queue="default", retries=3, backoff=podjobs.constant(0.2))
def flaky_sync(ctx: podjobs.Context, account_id: int) -> None:
    if ctx.attempt <= FLAKY_FAILURES:
        msg = f"partner API timed out (attempt {ctx.attempt})"
        record(ctx, [account_id], ok=False, error=msg)
        raise TimeoutError(msg)
    record(ctx, [account_id])


@podjobs.job(queue="low", retries=1, backoff=podjobs.constant(0.2))
def broken_export(ctx: podjobs.Context, export_id: int) -> None:
    msg = f"export {export_id}: bucket 's3://exports' does not exist"
    record(ctx, [export_id], ok=False, error=msg)
    raise RuntimeError(msg)


@podjobs.job(queue="low")
def nightly_report(ctx: podjobs.Context, shop_id: int) -> None:
    record(ctx, [shop_id])
