"""Migration status for deploy pipelines, the CLI and the HTTP API, read from ZooKeeper.

1. `collect(zk)` -> a JSON-ready dict: the leader, the revision order and
   head (as the leader published them), the halts, and per shard: its pod's
   state, current revision (when the leader last read it), pending revisions,
   the running one (where, since, backfill progress) and failures with their
   error.
2. `views(status)` turns that into rollout.ShardView for `wait_outcome`.
3. `wait(zk, target, timeout, ...)` -> `WaitResult`: polls until every shard
   completed `target` (exit 0), a migration failed or is halted (1), the
   timeout passed (3: also while `target` is not published yet, which is
   waited for, never failed), or ZooKeeper stayed unreachable for `zk_grace`
   seconds (4; a read that hangs counts from `read_timeout`), calling
   `progress(line)` whenever the picture changes. Deploy pipelines pass the
   head of the revisions they ship as `target` (`wait --migrations DIR`): the
   published head may still be the old leader's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from podjobs.errors import ServerUnreachable
from podjobs.exits import Exit
from podjobs.pods.topology import TopologyStore
from podjobs.pods.zk import ZK, ConnState, KazooException

from . import paths
from .leader import leader_info
from .rollout import ShardView, completed, wait_outcome
from .runs import RunStore
from .runstate import OPEN, STOPPED

#: seconds ZooKeeper may stay unreachable during a wait before it ends with exit 4
ZK_GRACE = 10.0
#: seconds one status read may take before it counts as ZooKeeper trouble
READ_TIMEOUT = 5.0


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
             "backfill_job": r.backfill_job or None, "progress": r.extra.get("progress"),
             "resumed_after": r.extra.get("resumed_after", 0)}
            for r in runs.values() if r.state in OPEN]
        failures = [
            {"revision": r.revision, "state": r.state.value, "error": r.error,
             "at": r.finished_at, "worker": r.worker, "applied": r.extra.get("applied", [])}
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


@dataclass
class WaitResult:
    """How a wait ended: `code` (podjobs.exits.Exit), `outcome` ("done", "failed", "timeout",
    "unreachable"), the `target` revision, a one-line `message`, the `reasons` of a failure,
    and the last status read (None when none could be read)."""

    code: Exit
    outcome: str
    target: str | None
    message: str
    reasons: list[str] = field(default_factory=list)
    status: dict[str, Any] | None = None


def read_bounded(read: Callable[[], dict[str, Any]], timeout: float) -> dict[str, Any]:
    """`read()` in a daemon thread, waited for at most `timeout` seconds: a frozen ZooKeeper
    holds a kazoo call until the connection is declared lost, and a call made while kazoo
    reconnects waits as long as that takes. `ServerUnreachable` when it did not answer."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = read()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    t = threading.Thread(target=run, name="podjobs-wait-read", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise ServerUnreachable(f"ZooKeeper did not answer within {timeout:g}s")
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, KazooException | ServerUnreachable):
            raise ServerUnreachable(f"ZooKeeper: {type(exc).__name__} {exc}".strip()) from exc
        raise exc
    value: dict[str, Any] = box["value"]
    return value


def wait(zk: ZK, target: str | None, timeout: float, interval: float = 1.0,
         progress: Callable[[str], None] = lambda _line: None,
         clock: Callable[[], float] = time.monotonic, *, zk_grace: float = ZK_GRACE,
         read_timeout: float = READ_TIMEOUT) -> WaitResult:
    """Poll until every shard completed `target` (default: the published head), a migration
    failed or is halted, the timeout passed, or ZooKeeper stayed unreachable for `zk_grace`
    seconds (see the module docstring)."""
    deadline = clock() + timeout
    last = ""
    status: dict[str, Any] | None = None
    trouble_since: float | None = None
    while True:
        try:
            if zk.state != ConnState.CONNECTED:
                raise ServerUnreachable(f"ZooKeeper connection {zk.state.value.lower()}")
            status = read_bounded(lambda: collect(zk), read_timeout)
            trouble_since = None
        except ServerUnreachable as exc:
            now = clock()
            trouble_since = now if trouble_since is None else trouble_since
            if now - trouble_since >= zk_grace or now >= deadline:
                return WaitResult(
                    Exit.UNREACHABLE, "unreachable", target,
                    f"ZooKeeper at {zk.hosts} unreachable for {now - trouble_since:.0f}s ({exc}); "
                    f"the rollout's state is unknown (it goes on without this command): run "
                    f"'podjobs migrations wait' again once ZooKeeper answers", status=status)
            line = f"ZooKeeper unreachable ({exc}); trying again"
            if line != last:
                progress(line)
                last = line
            time.sleep(min(interval, max(0.0, deadline - clock())))
            continue
        order = status["order"]
        tgt = target or (order[-1] if order else None)
        if tgt is None:
            line = "no revisions published yet (is a scheduler running with --migrations?)"
        else:
            outcome, reasons = wait_outcome(
                order, views(status), {r: h.get("error", "") for r, h in status["halts"].items()},
                tgt)
            if outcome == "done":
                return WaitResult(Exit.OK, "done", tgt, f"every shard completed {tgt}",
                                  status=status)
            if outcome == "failed":
                return WaitResult(Exit.FAILED, "failed", tgt,
                                  "migration failed: " + "; ".join(reasons), reasons, status)
            if outcome == "unpublished":
                lead = status["leader"]
                line = (f"waiting for the leader ({lead['id'] if lead else 'none yet'}) to publish "
                        f"{tgt}: it knows {', '.join(order) or 'no revision'} (a scheduler with "
                        f"the new revisions must lead)")
            else:
                line = summary(status, tgt)
        if line != last:
            progress(line)
            last = line
        if clock() >= deadline:
            return WaitResult(Exit.TIMEOUT, "timeout", tgt, f"timed out after {timeout:g}s: {line}",
                              status=status)
        time.sleep(min(interval, max(0.0, deadline - clock())))
