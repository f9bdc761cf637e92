"""Section 2 of `make demo` (demo/run.py): a workload on one pod, two workers, what ran,
what retried and what died."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import redis

from demo.common import QUEUES, WORKLOAD_TIMEOUT, DemoFailed, heading, run_cli, short_args
from podjobs import keys
from podjobs.ops import Inspector
from podjobs.table import render


def enqueue_workload() -> dict[str, Any]:
    """Enqueue everything (lowest priority first, to show the workers reorder it).

    Returns what to expect: successful runs per queue and the dead jobs.
    """
    from demo import app

    app.rebuild_search_index.enqueue(2)
    app.rebuild_search_index.enqueue(3)
    app.broken_export.enqueue(13)
    images = [(i, size) for i in range(1, 13) for size in ("thumb", "large")]
    app.resize_image.enqueue_many(images)
    app.flaky_webhook.enqueue(7)
    for user_id in (2, 3, 4):
        app.send_welcome_email.enqueue(user_id)
    # a chain: the search index of shop 1 is rebuilt once its owner got the email
    app.send_welcome_email.call(1).then(app.rebuild_search_index, 1).enqueue()
    app.rebuild_search_index.enqueue_in(1.0, 42)
    print("  low       rebuild_search_index(2), (3), broken_export(13)")
    print(f"  default   resize_image x{len(images)} (one enqueue_many), flaky_webhook(7)")
    print("  critical  send_welcome_email(2), (3), (4), "
          "send_welcome_email(1).then(rebuild_search_index(1))")
    print("  in 1 s    rebuild_search_index(42) (enqueue_in)")
    return {"ok": {"critical": 4, "default": len(images) + 1, "low": 4}, "dead": 1}


def read_log(r: redis.Redis) -> list[dict[str, Any]]:
    from demo.app import LOG_KEY

    return [json.loads(x) for x in r.lrange(LOG_KEY, 0, -1)]


def wait_settled(r: redis.Redis, ins: Inspector, expect: dict[str, Any],
                 workers: list[subprocess.Popen[bytes]]) -> float:
    """Poll Redis until every expected run happened and nothing is left; returns seconds."""
    want_ok = sum(expect["ok"].values())
    t0 = time.monotonic()
    while True:
        ok = sum(1 for e in read_log(r) if e["ok"])
        dead = int(r.zcard(keys.DEAD))
        idle = all(q.size == q.scheduled == q.retrying == q.in_flight == 0 for q in ins.queues())
        if ok >= want_ok and dead >= expect["dead"] and idle:
            return time.monotonic() - t0
        for w in workers:
            if w.poll() is not None:
                raise DemoFailed(f"worker pid {w.pid} exited with code {w.returncode}")
        if time.monotonic() - t0 > WORKLOAD_TIMEOUT:
            raise DemoFailed(
                f"workload not settled after {WORKLOAD_TIMEOUT:.0f} s: {ok}/{want_ok} runs, "
                f"{dead}/{expect['dead']} dead, queues idle: {idle}")
        time.sleep(0.05)


def report(r: redis.Redis, ins: Inspector, expect: dict[str, Any], url: str) -> None:
    entries = read_log(r)
    runs = [e for e in entries if e["ok"]]
    fails = [e for e in entries if not e["ok"]]

    heading("what ran")
    rows = []
    for q in QUEUES.split(","):
        pos = [i for i, e in enumerate(runs, 1) if e["queue"] == q]
        rows.append([q, len(pos), expect["ok"][q], min(pos, default="-"), max(pos, default="-")])
    print(render(["queue", "ran", "expected", "first #", "last #"], rows))
    print("\nfirst runs, in order (everything was enqueued low first, critical last):")
    print(render(["#", "job", "queue", "attempt", "worker pid"],
                 [[i, f"{e['job']}({short_args(e['args'])})", e["queue"], e["attempt"], e["pid"]]
                  for i, e in enumerate(runs[:5], 1)]))
    by_pid: dict[int, int] = {}
    for e in runs:
        by_pid[e["pid"]] = by_pid.get(e["pid"], 0) + 1
    print("\nper worker: " + ", ".join(f"pid {p} ran {n}" for p, n in sorted(by_pid.items())))
    pos_of = {(e["job"], tuple(e["args"])): i for i, e in enumerate(runs, 1)}
    head, follow = pos_of.get(("send_welcome_email", (1,))), pos_of.get(("rebuild_search_index", (1,)))
    print(f"chain:      send_welcome_email(1) ran #{head}, then rebuild_search_index(1) #{follow}")
    sched = next((e for e in runs if e["job"] == "rebuild_search_index" and e["args"] == [42]), None)
    if sched is not None:
        print(f"scheduled:  rebuild_search_index(42) ran {sched['waited_ms'] / 1000:.2f} s "
              f"after enqueue_in(1.0)")
    for q in QUEUES.split(","):
        got = sum(1 for e in runs if e["queue"] == q)
        if got != expect["ok"][q]:
            raise DemoFailed(f"queue {q}: {got} successful runs, expected {expect['ok'][q]}")

    heading("what retried")
    stats = ins.stats()
    print(render(list(stats), [list(stats.values())]))
    later = {(e["job"], tuple(e["args"]), e["attempt"]) for e in entries}
    print(f"\n{len(fails)} failed attempts; {stats['failed']} were retried (stats 'failed'):")
    print(render(["job", "attempt", "error", "then"],
                 [[f"{e['job']}({short_args(e['args'])})", e["attempt"], e["error"],
                   "retried" if (e["job"], tuple(e["args"]), e["attempt"] + 1) in later else "dead"]
                  for e in fails]))
    flaky_ok = next((e for e in runs if e["job"] == "flaky_webhook"), None)
    if flaky_ok is not None:
        print(f"flaky_webhook({short_args(flaky_ok['args'])}) succeeded on attempt "
              f"{flaky_ok['attempt']}")
    else:
        raise DemoFailed("flaky_webhook never succeeded")

    heading("what died")
    dead = ins.dead()
    print(render(["id", "job", "attempts", "reason", "error"],
                 [[d.get("id"), f"{d.get('job', '').rsplit('.', 1)[-1]}({short_args(d.get('args', []))})",
                   d.get("attempt"), d.get("dead_reason"),
                   f"{(d.get('error') or {}).get('class')}: {(d.get('error') or {}).get('message')}"]
                  for d, _ in dead]))
    if len(dead) != expect["dead"]:
        raise DemoFailed(f"{len(dead)} dead jobs, expected {expect['dead']}")

    run_cli(["dead", "list", "--redis", url])
