"""The migration job: apply one Alembic revision to one shard, safely.

The scheduler's leader queues `podjobs.migrate` on the shard's pod (one at a
time per shard, see rollout.py). A pod worker imports this module, so the job
is known to every pod worker. One run:

1. Reads its run record; a record that names another job id, or that is no
   longer queued, means this delivery is stale: it does nothing.
2. Takes the shard's ZooKeeper lock (migrations/locks/{pod}); its node's
   sequence number is the run's fence. Busy: put back for later (no failure).
3. On one autocommit connection to the shard: `GET_LOCK` and the fence
   (shardlock.py), then re-reads the shard's revision: already applied ->
   complete without running anything (running twice changes nothing); not
   at the revision just before -> failed, with both named.
4. Marks the record running (in ZooKeeper and as a row on the shard), runs
   the revision with the guard checking lock, fence and ZooKeeper before
   every statement, stamps alembic_version.
5. If the revision has `backfill()`, enqueues that job on the pod and stays
   running until the leader sees it succeed; else complete.
6. Any error: failed with the error, and the revision is halted everywhere
   (`podjobs migrations retry|skip|cancel` to go on). A redelivery of a job
   whose earlier run died mid-way finds the record running: if the shard
   reached the revision it is complete, else failed ("stopped midway"), since
   a half-applied revision must be looked at by a person.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kazoo.exceptions import BadVersionError, KazooException

from podjobs.backend import RedisBackend
from podjobs.context import current
from podjobs.invoke import Reenqueue
from podjobs.jobs import job
from podjobs.pods import shards
from podjobs.pods.topology import TopologyStore
from podjobs.pods.zk import ZK, ConnState, parse_zk_spec

from . import paths
from .leader import fence_of
from .revisions import Revisions, apply, current_revision
from .runs import Run, RunState, RunStore, ShardLog, ensure_tables
from .shardlock import LockLost, ShardLock

log = logging.getLogger(__name__)

JOB_NAME = "podjobs.migrate"
#: seconds to wait for the shard's ZooKeeper lock before putting the job back
LOCK_WAIT = 5.0

_zk_lock = threading.Lock()
_zk_clients: dict[tuple[str, float], ZK] = {}
_revisions: dict[str, Revisions] = {}


def zk_client(spec: str, timeout: float) -> ZK:
    """One started ZooKeeper session per (spec, timeout) in this process."""
    with _zk_lock:
        zk = _zk_clients.get((spec, timeout))
        if zk is None or zk.state == ConnState.LOST:
            hosts, root = parse_zk_spec(spec)
            zk = ZK(hosts, root=root or "/podjobs", timeout=timeout).start()
            _zk_clients[(spec, timeout)] = zk
        return zk


def revisions_in(directory: str) -> Revisions:
    rv = _revisions.get(directory)
    if rv is None:
        rv = _revisions[directory] = Revisions(directory)
    return rv


class _Watch:
    """Why this runner may no longer act (ZooKeeper trouble, a cancel), or None."""

    def __init__(self, zk: ZK, store: RunStore, pod: str, revision: str) -> None:
        self.zk, self.store, self.pod, self.revision = zk, store, pod, revision
        self.trouble: str | None = None
        zk.add_listener(self._on_state)

    def _on_state(self, state: ConnState) -> None:
        if state != ConnState.CONNECTED and self.trouble is None:
            self.trouble = f"ZooKeeper session {state.value.lower()}: the shard lock may be gone"

    def reason(self) -> str | None:
        if self.trouble:
            return self.trouble
        try:
            run = self.store.get(self.pod, self.revision)
        except KazooException as exc:
            return f"cannot read the run record ({exc!r})"
        if run is not None and run.cancel_requested:
            return "cancelled by an operator"
        return None

    def close(self) -> None:
        self.zk.remove_listener(self._on_state)


def _finish(store: RunStore, run: Run, state: RunState, error: str = "", **changes: Any) -> None:
    """Write the final state, re-reading on a version conflict (an operator's cancel flag)."""
    for _ in range(5):
        run.state = state
        run.error = error
        run.finished_at = time.time() if state in (RunState.COMPLETE, RunState.FAILED,
                                                  RunState.CANCELLED) else run.finished_at
        for k, v in changes.items():
            setattr(run, k, v)
        try:
            store.update(run)
            break
        except BadVersionError:
            fresh = store.get(run.pod, run.revision)
            if fresh is None:
                return
            run = fresh
    if state in (RunState.FAILED, RunState.CANCELLED):
        store.halt(run.revision, run.pod, error)


@job(name=JOB_NAME, retries=3)  # type: ignore[untyped-decorator]
def migrate(zk_spec: str, shard: str, revision: str, directory: str, zk_timeout: float = 10.0,
            steal_after: float = 5.0) -> dict[str, Any]:
    """Apply `revision` from `directory` to the shard of pod `shard` (see the module docstring)."""
    ctx = current()
    pod = shard
    zk = zk_client(zk_spec, zk_timeout)
    store = RunStore(zk)
    run = store.get(pod, revision)
    if run is None or run.job_id != ctx.job_id:
        log.info("migration %s on %s: job %s is not the current run; nothing to do",
                 revision, pod, ctx.job_id)
        return {"result": "superseded"}
    if run.state not in (RunState.QUEUED, RunState.RUNNING):
        return {"result": run.state.value}
    lock = zk.client.Lock(paths.lock(zk, pod), ctx.worker_id or "")
    if not lock.acquire(timeout=LOCK_WAIT):
        raise Reenqueue(delay=1.0, reason="the shard's migration lock is busy")
    watch = _Watch(zk, store, pod, revision)
    try:
        fence = fence_of(lock.node)
        return _run_locked(ctx, store, watch, pod, revision, directory, fence, steal_after)
    finally:
        watch.close()
        try:
            lock.release()
        except KazooException:
            pass


def _run_locked(ctx: Any, store: RunStore, watch: _Watch, pod: str, revision: str,
                directory: str, fence: int, steal_after: float) -> dict[str, Any]:
    run = store.get(pod, revision)
    if run is None or run.job_id != ctx.job_id or run.state not in (RunState.QUEUED,
                                                                    RunState.RUNNING):
        return {"result": "superseded" if run is None or run.job_id != ctx.job_id
                else run.state.value}
    revisions = revisions_in(directory)
    rev = revisions.get(revision)
    shard_url = TopologyStore(watch.zk).pod(pod).shard_url
    worker = ctx.worker_id or ""
    eng = shards.engine(shard_url)
    with eng.connect() as raw:
        conn = raw.execution_options(isolation_level="AUTOCOMMIT")
        ensure_tables(conn)
        slock = ShardLock(conn, fence, worker, watch.reason, steal_after=steal_after)
        shard_log = ShardLog(conn)
        try:
            slock.acquire()
            at = current_revision(conn)
            if revisions.reached(at, revision):
                note = "" if run.state == RunState.QUEUED else "an earlier run finished it"
                _finish(store, run, RunState.COMPLETE, fence=fence, worker=worker,
                        extra={**run.extra, "note": note or "already applied"})
                return {"result": "already applied"}
            if run.state == RunState.RUNNING:
                error = (f"an earlier run (worker {run.worker or '?'}) stopped midway; the shard "
                         f"is at {at or 'base'}, the revision may be half applied: check the shard, "
                         f"then 'podjobs migrations retry' or 'skip'")
                _finish(store, run, RunState.FAILED, error, fence=fence, worker=worker)
                return {"result": "failed", "error": error}
            if at != rev.down:
                error = (f"shard {pod} is at {at or 'base'} but {revision} follows "
                         f"{rev.down or 'base'}: run the revisions in between first")
                _finish(store, run, RunState.FAILED, error)
                return {"result": "failed", "error": error}
            run.state, run.started_at, run.worker, run.fence = (RunState.RUNNING, time.time(),
                                                                worker, fence)
            store.update(run)
            shard_log.start(revision, worker, ctx.job_id, fence)
            slock.install()
            log.info("migration %s on %s: running (fence %d)", revision, pod, fence)
            apply(conn, revisions, revision)
            slock.uninstall()
            shard_log.finish(RunState.COMPLETE)
            call = revisions.backfill_call(revision)
            if call is not None:
                backfill_id = _enqueue_backfill(ctx, call, pod)
                _finish(store, run, RunState.RUNNING, backfill_job=backfill_id)
                return {"result": "backfilling", "backfill_job": backfill_id}
            _finish(store, run, RunState.COMPLETE)
            log.info("migration %s on %s: complete", revision, pod)
            return {"result": "complete"}
        except Exception as exc:
            slock.uninstall()
            cancelled = "cancelled by an operator" in str(exc)
            state = RunState.CANCELLED if cancelled else RunState.FAILED
            error = f"{type(exc).__name__}: {exc}"[:2000]
            log.error("migration %s on %s: %s", revision, pod, error)
            try:
                shard_log.finish(state, error)
            except Exception:  # the connection may be the thing that died: use a fresh one
                try:
                    with eng.connect() as c2:
                        shard_log.conn = c2.execution_options(isolation_level="AUTOCOMMIT")
                        shard_log.finish(state, error)
                except Exception as exc2:
                    log.warning("could not record the failure on the shard: %s", exc2)
            fresh = store.get(pod, revision)
            if fresh is not None and fresh.job_id == ctx.job_id and fresh.fence == fence \
                    and fresh.state == RunState.RUNNING:
                _finish(store, fresh, state, error)
            if isinstance(exc, LockLost | KazooException) or cancelled:
                return {"result": state.value, "error": error}
            return {"result": "failed", "error": error}
        finally:
            slock.release()


def _enqueue_backfill(ctx: Any, call: Any, pod: str) -> str:
    """Enqueue the revision's backfill on this pod's Redis and register it as an iteration job."""
    from podjobs.client import Client
    from podjobs.iteration import keys as iter_keys
    from podjobs.iteration.store import lua_for

    backend = ctx.backend
    handle = Client(backend).enqueue_call(call, pod=pod)
    if isinstance(backend, RedisBackend):
        lua_for(backend).run("iter_register", "record an iteration job",
                             [iter_keys.job(handle.id), iter_keys.INDEX],
                             [handle.id, handle.job, handle.queue, ""])
    return str(handle.id)
