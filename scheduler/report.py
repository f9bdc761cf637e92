"""Migration status for deploy pipelines, the CLI and the HTTP API, read from ZooKeeper.

1. `collect(zk)` -> a JSON-ready dict: the leader, the revision order and
   head (as the leader published them), the halts, and per shard: its pod's
   state, current revision (when the leader last read it), pending revisions,
   the running one (where, since, backfill progress) and failures with their
   error.
2. `views(status)` turns that into rollout.ShardView for `wait_outcome`.
3. `wait(zk, target, timeout, ...)` polls until every shard completed `target`
   (0), a migration failed or is halted (1), or the timeout passed (2),
   calling `progress(line)` whenever the picture changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from podjobs.pods.topology import TopologyStore
from podjobs.pods.zk import ZK

from . import paths
from .leader import leader_info
from .rollout import ShardView, completed, wait_outcome
from .runs import RunStore
from .runstate import OPEN, STOPPED

EXIT_DONE, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2


def collect(zk: ZK) -> dict[str, Any]:
    published = zk.get_json(paths.revisions(zk))
    order: list[str] = list(published[0].get("order", [])) if published else []
    head = order[-1] if order else None
    pods = TopologyStore(zk).pods()
    store = RunStore(zk)
    halts = store.halts()
    shards = []
    published_shards = zk.get_many_json(paths.shard(zk, name) for name in pods)
    for name, pod in sorted(pods.items()):
        seen = published_shards.get(paths.shard(zk, name))
        info = seen[0] if isinstance(seen, tuple) else {}
        cur = info.get("current")
        runs = store.for_pod(name)
        try:
            pending = order[order.index(cur) + 1:] if cur is not None else list(order)
        except ValueError:
            pending = []
        running = [
            {"revision": r.revision, "state": r.state.value, "worker": r.worker,
             "queued_at": r.queued_at, "since": r.started_at, "job_id": r.job_id,
             "backfill_job": r.backfill_job or None, "progress": r.extra.get("progress")}
            for r in runs.values() if r.state in OPEN]
        failures = [
            {"revision": r.revision, "state": r.state.value, "error": r.error,
             "at": r.finished_at, "worker": r.worker}
            for r in runs.values() if r.state in STOPPED]
        shards.append({
            "pod": name, "pod_state": pod.state.value, "known": isinstance(seen, tuple) and "current" in info,
            "current": cur, "checked_at": info.get("checked_at"), "read_error": info.get("error") or None,
            "pending": pending, "running": running, "failures": failures,
            "runs": {r.revision: r.to_json() for r in runs.values()},
        })
    return {"leader": leader_info(zk), "order": order, "head": head, "halts": halts,
            "shards": shards}


def views(status: dict[str, Any]) -> list[ShardView]:
    return [ShardView(s["pod"], s["current"], {r: v["state"] for r, v in s["runs"].items()},
                      s["known"]) for s in status["shards"]]


def summary(status: dict[str, Any], target: str) -> str:
    """"2/3 shards at abc123; p2: running def456 (40%)" style one-liner."""
    order = status["order"]
    vs = views(status)
    done = sum(1 for v in vs if completed(order, v, target))
    parts = [f"{done}/{len(vs)} shards completed {target}"]
    for s in status["shards"]:
        for r in s["running"]:
            prog = r.get("progress") or {}
            pct = prog.get("percent")
            extra = f" ({pct:.0f}% backfilled)" if pct is not None else ""
            parts.append(f"{s['pod']}: {r['revision']} {r['state']}{extra}")
    return "; ".join(parts)


def wait(zk: ZK, target: str | None, timeout: float, interval: float = 1.0,
         progress: Callable[[str], None] = lambda _line: None,
         clock: Callable[[], float] = time.monotonic) -> tuple[int, str]:
    """(exit code, final line) - see the module docstring."""
    deadline = clock() + timeout
    last = ""
    while True:
        status = collect(zk)
        order = status["order"]
        if not order:
            line = "no revisions published yet (is a scheduler running with --migrations?)"
        else:
            tgt = target or order[-1]
            if tgt not in order:
                return EXIT_FAILED, (f"revision {tgt!r} is unknown to the scheduler (known: "
                                     f"{', '.join(order)})")
            outcome, reasons = wait_outcome(
                order, views(status), {r: h.get("error", "") for r, h in status["halts"].items()},
                tgt)
            if outcome == "done":
                return EXIT_DONE, f"every shard completed {tgt}"
            if outcome == "failed":
                return EXIT_FAILED, "migration failed: " + "; ".join(reasons)
            line = summary(status, tgt)
        if line != last:
            progress(line)
            last = line
        if clock() >= deadline:
            return EXIT_TIMEOUT, f"timed out after {timeout:g}s: {line}"
        time.sleep(min(interval, max(0.0, deadline - clock())))
