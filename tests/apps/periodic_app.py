"""Periodic jobs for tests/test_periodic.py, and a scheduler process to SIGKILL.

Each job appends what it saw to the Redis list `rec:ticks` on the Redis of the
pod it runs on: {"job", "pod", "tick", "missed", "id"}, the tick read from
`podjobs.current().payload`.

`python -m tests.apps.periodic_app ZK_HOSTS ZK_ROOT ID` runs a scheduler (leader
election + the periodic duty over every periodic job registered here, 50 ms
ticks, a 1 s ZooKeeper session) until SIGTERM.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from typing import Any

import podjobs

REC = "rec:ticks"


def _record(ctx: podjobs.Context) -> None:
    info: dict[str, Any] = podjobs.current().payload.get("periodic") or {}
    ctx.backend.redis.rpush(REC, json.dumps({
        "job": ctx.job_name, "pod": ctx.pod, "tick": info.get("tick"),
        "missed": info.get("missed"), "id": ctx.job_id}))


@podjobs.periodic("* * * * * *", per_pod=True, catch_up="once", grace=3600,
                  name="periodic.every_second")
def every_second(ctx: podjobs.Context) -> None:
    _record(ctx)


@podjobs.job(name="periodic.a")
def job_a(ctx: podjobs.Context) -> None:
    _record(ctx)


@podjobs.job(name="periodic.b")
def job_b(ctx: podjobs.Context) -> None:
    _record(ctx)


def main(argv: list[str]) -> int:
    from podjobs.pods.directory import Directory
    from podjobs.pods.router import Router
    from podjobs.pods.zk import ZK
    from podjobs.scheduler.periodic import PeriodicDuty
    from podjobs.scheduler.process import Scheduler

    hosts, root, ident = argv
    logging.basicConfig(level=logging.INFO, format=f"{ident} %(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    zk = ZK(hosts, root, timeout=1.0).start(10)
    directory = Directory(zk).start()
    router = Router(directory)
    try:
        Scheduler(zk, [PeriodicDuty(zk, router)], interval=0.05, identity={"id": ident}).run(stop)
    finally:
        router.close()
        directory.stop()
        zk.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
