"""Operator actions on a halted or unwanted migration: retry, cancel, skip.

1. `retry(zk, revision, pod=None)`: removes the failed or cancelled run
   records of `revision` (on `pod`, or on every shard) and lifts its halt once
   no shard has a failed or cancelled run of it left; the leader queues it
   again on its next tick. A run whose schema step was applied and whose
   backfill failed keeps its record and gets a new backfill instead.
2. `cancel(zk, revision, pod=None)`: a queued run becomes cancelled (its job
   does nothing when it comes), a running one is asked to stop before its
   next step; the revision is halted so it is not queued anywhere else.
3. `skip(zk, revision, pod)`: for a shard whose revision failed and was fixed
   by hand (or must not run): holding the shard's ZooKeeper lock, stamps the
   shard's alembic_version to `revision` without running it and records the
   run as complete (skipped). The shard must be at the revision before it.
"""

from __future__ import annotations

import time
from typing import Any

from podjobs import db as shards
from podjobs.errors import PodjobsError
from podjobs.ids import new_id
from podjobs.pods.topology import TopologyStore
from podjobs.pods.zk import ZK, BadVersionError

from . import paths
from .revisions import Revisions, current_revision, stamp
from .runs import RunStore, ensure_tables
from .runstate import OPEN, STOPPED, Run, RunState, check, new_run, transition


def _pods(zk: ZK, pod: str | None) -> list[str]:
    names = TopologyStore(zk).pod_names()
    if pod is None:
        return list(names)
    if pod not in names:
        raise PodjobsError(f"no pod named {pod!r} (pods: {', '.join(names)})")
    return [pod]


def retry(zk: ZK, revision: str, pod: str | None = None) -> list[str]:
    """Pods whose record was cleared (see the module docstring)."""
    store = RunStore(zk)
    cleared = []
    for p in _pods(zk, pod):
        run = store.get(p, revision)
        if run is None:
            continue
        if run.state in OPEN:
            raise PodjobsError(f"{revision} is {run.state.value} on {p}: nothing to retry; "
                               f"cancel it first if it is stuck")
        if run.state == RunState.COMPLETE:
            continue
        if run.backfill_job:
            # the schema step is on the shard, only its backfill failed: run a new backfill
            # (the leader enqueues it: see MigrationsDuty._backfill_vanished)
            extra = {k: v for k, v in run.extra.items() if k != "progress"}
            extra["backfill_queued_at"] = 1.0  # long ago: enqueue on the next tick
            store.update(transition(run, RunState.RUNNING, now=time.time(), error="",
                                    backfill_job=new_id(), cancel_requested=False, extra=extra))
        else:
            check(run.state, None, f"migration run {revision} on {p}")
            store.delete(run)
        cleared.append(p)
    halted = revision in store.halts()
    if not cleared and not halted:
        raise PodjobsError(f"{revision} has no failed or cancelled run and is not halted")
    if not _still_failed(zk, store, revision):
        store.unhalt(revision)
    return cleared


def _still_failed(zk: ZK, store: RunStore, revision: str) -> list[str]:
    """Pods where `revision` is failed or cancelled (the halt stays while there are any)."""
    return [p for p in TopologyStore(zk).pod_names()
            if (r := store.get(p, revision)) is not None
            and r.state in STOPPED]


def cancel(zk: ZK, revision: str, pod: str | None = None) -> dict[str, str]:
    """{pod: what happened} (see the module docstring)."""
    store = RunStore(zk)
    out = {}
    for p in _pods(zk, pod):
        for _ in range(5):
            run = store.get(p, revision)
            if run is None or run.state not in OPEN:
                break
            try:
                if run.state == RunState.QUEUED:
                    store.update(transition(
                        run, RunState.CANCELLED, now=time.time(),
                        error="cancelled by an operator before it started"))
                    out[p] = RunState.CANCELLED.value
                else:
                    run.cancel_requested = True
                    store.update(run)
                    out[p] = "stop requested (stops before its next step)"
                break
            except BadVersionError:
                continue
    store.halt(revision, pod or "*", "cancelled by an operator")
    return out


def skip(zk: ZK, revision: str, pod: str, directory: str) -> Run:
    """Stamp `revision` on `pod`'s shard without running it (see the module docstring)."""
    revisions = Revisions(directory)
    rev = revisions.get(revision)
    store = RunStore(zk)
    _pods(zk, pod)
    lock = zk.lock(paths.lock(zk, pod), "operator skip")
    if not lock.acquire(timeout=10):
        raise PodjobsError(f"a migration runner holds the lock of {pod}; wait or cancel it first")
    try:
        run = store.get(pod, revision)
        if run is not None and run.state in OPEN:
            raise PodjobsError(f"{revision} is {run.state.value} on {pod}; cancel it first")
        url = TopologyStore(zk).pod(pod).shard_url
        with shards.engine(url).connect() as raw:
            conn = raw.execution_options(isolation_level="AUTOCOMMIT")
            ensure_tables(conn)
            at = current_revision(conn)
            if at != rev.down:
                raise PodjobsError(f"shard {pod} is at {at or 'base'}; {revision} can only be "
                                   f"skipped from {rev.down or 'base'}")
            check(None if run is None else run.state, RunState.COMPLETE,
                  f"skipping migration run {revision} on {pod}")
            stamp(conn, revisions, revision)
        now = time.time()
        rec: dict[str, Any] = {"note": "skipped by an operator: stamped, not run"}
        if run is None:
            run = new_run(pod, revision, RunState.COMPLETE, now=now, skipped=True, extra=rec)
            store.create(run)
        else:
            store.update(transition(run, RunState.COMPLETE, now=now, skipped=True,
                                    extra=dict(run.extra, **rec)))
        if not _still_failed(zk, store, revision):
            store.unhalt(revision)
        return run
    finally:
        lock.release()
