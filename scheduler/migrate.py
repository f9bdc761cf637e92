"""The migration job: apply one Alembic revision to one shard, safely.

The scheduler's leader queues `podjobs.migrate` on the shard's pod (one at a
time per shard, see rollout.py). A pod worker imports this module, so the job
is known to every pod worker. One run:

1. Reads its run record; a record that names another job id, or that is no
   longer queued, means this delivery is stale: it does nothing.
2. A worker that is stopping puts the job back before taking anything. Takes
   the shard's ZooKeeper lock (migrations/locks/{pod}); its node's sequence
   number is the run's fence. Busy: put back for later (no failure).
3. On one autocommit connection to the shard: `GET_LOCK` and the fence
   (shardlock.py), `lock_wait_timeout` for the DDL, then re-reads the shard's
   revision: already applied -> complete without running anything (running
   twice changes nothing), or its backfill started if an earlier run died
   between the two; not at the revision just before -> failed, both named.
4. Marks the record running (in ZooKeeper and as a row on the shard), runs
   the revision with the guard checking lock, fence and ZooKeeper before
   every statement, stamps alembic_version.
5. If the revision has `backfill()` (an iteration job's call), records the
   backfill's job id, then enqueues it on the pod, and stays running until the
   leader sees it succeed (the leader enqueues it again if it never arrived);
   else complete.
6. Errors:
   - the revision is not in this worker's directory: it is read again when its
     contents changed since (a deploy added the revision after the worker
     started); still missing (the worker runs the code before the deploy): the
     job is put back for another worker, never failed, so restarting schedulers
     before workers does not halt the rollout;
   - before the DDL, while the run is still queued: one that no retry can fix
     (the revision does not load, the shard is not at the revision before) fails
     the run; any other is written into the record and raised, so the job's
     retries try again (a dead job makes the leader fail the run);
   - during the DDL: failed (or cancelled) with the error, and the revision is
     halted everywhere (`podjobs migrations retry|skip|cancel` to go on);
   - after the revision was stamped: raised, so the retry finds the shard at
     the revision and finishes the bookkeeping (complete, or the backfill).
   A redelivery of a job whose earlier run died mid-way finds the record
   running: if the shard reached the revision it is complete, else failed
   ("stopped midway"), since a half-applied revision needs a person.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from podjobs import db as shards
from podjobs.backend import RedisBackend
from podjobs.context import current
from podjobs.ids import new_id
from podjobs.invoke import Reenqueue
from podjobs.jobs import job
from podjobs.payload import encode
from podjobs.pods.topology import Pod, TopologyStore
from podjobs.pods.zk import (
    ZK,
    BadVersionError,
    ConnState,
    KazooException,
    LockTimeout,
    NoNodeError,
    decode_json,
    parse_zk_spec,
)

from . import paths
from .applied import HalfApplied, StatementLog, plan
from .leader import fence_of
from .revisions import Revisions, apply, current_revision, directory_fingerprint, resumable
from .runs import RunStore, ShardLog, ensure_tables, last_run
from .runstate import OPEN, STOPPED, IllegalTransition, Run, RunState, transition

if TYPE_CHECKING:
    from podjobs.pods.podworker import PodWorker
    from podjobs.worker import WorkerConfig
from .shardlock import ShardLock, StaleFence, UnsupportedShard

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


def close_zk_clients() -> None:
    """Stop the sessions `zk_client` opened (tests; a worker's are closed at exit)."""
    with _zk_lock:
        clients = list(_zk_clients.values())
        _zk_clients.clear()
    for zk in clients:
        try:
            zk.stop()
        except Exception as exc:
            log.info("closing %r: %s", zk, exc)


def revisions_in(directory: str) -> Revisions:
    """The revisions of `directory` as this process last read them (read on first use)."""
    rv = _revisions.get(directory)
    if rv is None:
        rv = _revisions[directory] = Revisions(directory)
    return rv


def revisions_with(directory: str, revision: str) -> Revisions | None:
    """The revisions of `directory`, read again when `revision` is not among those this
    process read (a deploy added it after the worker started) and the directory's contents
    changed since; None when the directory still lacks it (this worker runs older code)."""
    rv = revisions_in(directory)
    if revision in rv.by_id:
        return rv
    with _zk_lock:
        if rv.fingerprint == directory_fingerprint(directory):
            return None
        rv = _revisions[directory] = Revisions(directory)
    log.info("migrations in %s read again: %s", directory, ", ".join(rv.order))
    return rv if revision in rv.by_id else None


class _Watch:
    """Why this runner may no longer act (ZooKeeper trouble, a cancel), or None.

    A suspended connection (ZooKeeper unreachable, e.g. while an ensemble elects a new
    leader) holds the runner before its next statement, up to the session timeout: if the
    client gets back to the same session (CONNECTED after SUSPENDED), the server never
    expired it, so our ephemeral lock node was never deleted and nobody else can have
    taken the lock: the run goes on. A lost session, or no answer within the session
    timeout, stops it (`LockLost`). Before issue 17's ensemble test a one-second leader
    election failed every running revision.

    The run record (its cancel flag) is read at the first check and then again only after
    it changed: the read leaves a one-shot watch whose event marks it changed (and so does
    a dropped connection). Before, every statement's check read it: five ZooKeeper round
    trips a trivial revision, ~70 ms of each migration job under load (issue 17)."""

    def __init__(self, zk: ZK, store: RunStore, pod: str, revision: str,
                 lock_node: str | None = None) -> None:
        self.zk, self.store, self.pod, self.revision = zk, store, pod, revision
        self.lock_node = lock_node
        self.trouble: str | None = None
        self.suspended = False
        self._verify = False  # back from a suspension: is our lock node still there?
        self._cond = threading.Condition()
        self._record = paths.run(zk, pod, revision)
        self._stale = True  # the record changed since we last read it (or never read)
        self._cancelled = False
        self._watcher = zk.watcher(self._on_record)
        zk.add_listener(self._on_state)

    def _on_state(self, state: ConnState) -> None:
        with self._cond:
            if state == ConnState.LOST and self.trouble is None:
                self.trouble = "ZooKeeper session lost: the shard lock is gone"
            self.suspended = state == ConnState.SUSPENDED
            self._cond.notify_all()

    def _on_record(self, _path: str, _event: str) -> None:
        self._stale = True  # kazoo's event thread: no ZooKeeper call here

    def _settled(self) -> str | None:
        with self._cond:
            if self.suspended and self.trouble is None:
                waited = time.monotonic()
                self._cond.wait_for(lambda: not self.suspended or self.trouble is not None,
                                    timeout=self.zk.timeout)
                if self.suspended and self.trouble is None:
                    self.trouble = (f"ZooKeeper session suspended for over its timeout "
                                    f"({self.zk.timeout:g} s): the shard lock may be gone")
                elif self.trouble is None:
                    self._verify = True
                    log.info("migration %s on %s: ZooKeeper connection back after %.2f s, "
                             "same session: going on", self.revision, self.pod,
                             time.monotonic() - waited)
            return self.trouble

    def reason(self) -> str | None:
        deadline = time.monotonic() + self.zk.timeout
        while True:
            trouble = self._settled()
            if trouble:
                return trouble
            try:
                if self._verify:
                    if self.lock_node is not None and not self.zk.exists(self.lock_node):
                        return f"our ZooKeeper lock node {self.lock_node} is gone"
                    self._verify = False
                    self._stale = True  # a change while we were away: read it
                if self._stale:
                    self._stale = False  # before the read: a change after it marks it again
                    got = self.zk.read_watched([self._record], self._watcher)[self._record]
                    if got is not None:
                        self._cancelled = bool(decode_json(got[0], self._record)
                                               .get("cancel_requested"))
                break
            except KazooException as exc:
                # the connection dropped under the read, maybe before kazoo reported the
                # suspension: read again (the suspension, once reported, holds us above)
                # until the session timeout
                self._stale = True
                if time.monotonic() >= deadline:
                    return f"cannot read the run record ({exc!r})"
                self._verify = True
                with self._cond:
                    self._cond.wait(0.1)
        if self._cancelled:
            return "cancelled by an operator"
        return None

    def close(self) -> None:
        self.zk.remove_listener(self._on_state)


def _finish(store: RunStore, run: Run, state: RunState, error: str = "", **changes: Any) -> None:
    """Write the state, re-reading on a version conflict (an operator's cancel flag). A record
    that another writer moved to a state from which `state` is no transition is left as it is."""
    for attempt in range(5):
        try:
            transition(run, state, now=time.time(), error=error, **changes)
        except IllegalTransition as exc:
            if attempt == 0:
                raise
            log.warning("%s: left as another writer made it", exc)
            return
        try:
            store.update(run)
            break
        except BadVersionError:
            fresh = store.get(run.pod, run.revision)
            if fresh is None:
                return
            run = fresh
    if state in STOPPED:
        store.halt(run.revision, run.pod, error)


@job(name=JOB_NAME, retries=3)  # type: ignore[untyped-decorator]
def migrate(zk_spec: str, shard: str, revision: str, directory: str, zk_timeout: float = 10.0,
            steal_after: float = 5.0, lock_wait_timeout: int = 60) -> dict[str, Any]:
    """Apply `revision` from `directory` to the shard of pod `shard` (see the module docstring)."""
    try:
        return _migrate(zk_spec, shard, revision, directory, zk_timeout, steal_after,
                        lock_wait_timeout)
    except KazooException as exc:
        # ZooKeeper unreachable for a moment (an ensemble electing a leader): no DDL ran, or
        # the shard has it and the next run finishes the bookkeeping. Not a failed attempt:
        # the job's retry backoff (a minute by the third) would hold the rollout that long
        log.warning("migration %s on %s: ZooKeeper trouble (%r); put back for %.0f s",
                    revision, shard, exc, ZK_TROUBLE_DELAY)
        raise Reenqueue(delay=ZK_TROUBLE_DELAY, reason=f"ZooKeeper: {exc!r}") from exc


#: seconds before a migration job that met ZooKeeper trouble before its DDL runs again
ZK_TROUBLE_DELAY = 1.0


def _migrate(zk_spec: str, shard: str, revision: str, directory: str, zk_timeout: float,
             steal_after: float, lock_wait_timeout: int) -> dict[str, Any]:
    ctx = current()
    pod = shard
    zk = zk_client(zk_spec, zk_timeout)
    store = RunStore(zk)
    run, shard_url = _read_run_and_shard(zk, pod, revision)
    if run is None or run.job_id != ctx.job_id:
        log.info("migration %s on %s: job %s is not the current run; nothing to do",
                 revision, pod, ctx.job_id)
        return {"result": "superseded"}
    if run.state not in OPEN:
        return {"result": run.state.value}
    if ctx.stopping.is_set():  # a deploy stops this worker: let the next one start the revision
        raise Reenqueue(delay=0.0, reason="worker stopping")
    lock_path = paths.lock(zk, pod)
    lock = zk.lock(lock_path, ctx.worker_id or "", path_exists=lock_path in _lock_paths)
    try:
        try:
            got = lock.acquire(timeout=LOCK_WAIT)
        except NoNodeError:  # the lock's parent went away since we last took it
            _lock_paths.discard(lock_path)
            lock = zk.lock(lock_path, ctx.worker_id or "")
            got = lock.acquire(timeout=LOCK_WAIT)
    except LockTimeout:
        got = False
    _lock_paths.add(lock_path)
    if not got:
        raise Reenqueue(delay=1.0, reason="the shard's migration lock is busy")
    watch = _Watch(zk, store, pod, revision,
                   f"{lock.path}/{lock.node}" if lock.node else None)
    try:
        fence = fence_of(lock.node)
        return _run_locked(ctx, store, watch, pod, revision, directory, fence, steal_after,
                           lock_wait_timeout, shard_url)
    finally:
        watch.close()
        try:
            lock.release()
        except KazooException:
            pass


#: the shard lock parents this process saw exist (kazoo's Lock would make sure of its
#: parent with a round trip each time)
_lock_paths: set[str] = set()


def _read_run_and_shard(zk: ZK, pod: str, revision: str) -> tuple[Run | None, str | None]:
    """The run record and the pod's shard URL, in one pipelined round (None: no such node)."""
    run_path, pod_path = paths.run(zk, pod, revision), TopologyStore(zk).pod_path(pod)
    got = zk.get_many_json([run_path, pod_path])
    r, p = got.get(run_path), got.get(pod_path)
    if isinstance(r, ValueError):
        raise r
    shard_url = Pod.from_json(pod, p[0]).shard_url if isinstance(p, tuple) else None
    return (Run.from_json(*r) if r is not None else None), shard_url


class _Permanent(Exception):
    """An error that no retry of the job can fix (fails the run before any DDL ran)."""


def _run_locked(ctx: Any, store: RunStore, watch: _Watch, pod: str, revision: str,
                directory: str, fence: int, steal_after: float,
                lock_wait_timeout: int, shard_url: str | None) -> dict[str, Any]:
    run = store.get(pod, revision)
    if run is None or run.job_id != ctx.job_id or run.state not in OPEN:
        return {"result": "superseded" if run is None or run.job_id != ctx.job_id
                else run.state.value}
    worker = ctx.worker_id or ""
    applied = False  # the schema step ran and was stamped: errors after it are not failures
    slock: ShardLock | None = None
    shard_log: ShardLog | None = None
    eng: Any = None
    try:
        try:
            found = revisions_with(directory, revision)
            if found is None:
                return _not_here_yet(ctx, store, run, revision, directory)
            revisions = found
            rev = revisions.get(revision)
            call = revisions.backfill_call(revision)
        except Reenqueue:
            raise
        except Exception as exc:
            raise _Permanent(f"cannot load revision {revision} from {directory}: "
                             f"{type(exc).__name__}: {exc}") from exc
        if shard_url is None:  # no such pod: says so, naming the pods there are
            shard_url = TopologyStore(watch.zk).pod(pod).shard_url
        eng = shards.engine(shard_url)
        with eng.connect() as raw:
            conn = raw.execution_options(isolation_level="AUTOCOMMIT")
            ensure_tables(conn)
            slock = ShardLock(conn, fence, worker, watch.reason, steal_after=steal_after)
            shard_log = ShardLog(conn)
            try:
                slock.acquire()
                # a DDL waiting for a table's metadata lock must not queue every query behind it
                conn.execute(text(f"SET SESSION lock_wait_timeout = {int(lock_wait_timeout)}"))
                at = current_revision(conn)
                if revisions.reached(at, revision):
                    return _already_applied(ctx, store, run, pod, revision, call, fence, worker)
                prev = last_run(conn, revision)
                earlier = prev["applied"] if prev and prev["state"] != RunState.COMPLETE else []
                if run.state == RunState.RUNNING:
                    error = (f"an earlier run (worker {run.worker or '?'}) stopped midway; the "
                             f"shard is at {at or 'base'}, the revision may be half applied "
                             f"({len(earlier)} statement(s) recorded as applied): check the "
                             f"shard, then 'podjobs migrations retry' or 'skip'")
                    _finish(store, run, RunState.FAILED, error, fence=fence, worker=worker,
                            extra={**run.extra, "applied": earlier})
                    return {"result": RunState.FAILED.value, "error": error}
                if at != rev.down:
                    raise _Permanent(f"shard {pod} is at {at or 'base'} but {revision} follows "
                                     f"{rev.down or 'base'}: run the revisions in between first")
                try:
                    skip = plan(revision, earlier, resumable(revisions, revision))
                except HalfApplied as exc:
                    raise _Permanent(str(exc)) from exc
                now = time.time()
                extra = {**run.extra, "resumed_after": skip} if skip else run.extra
                store.update(transition(run, RunState.RUNNING, now=now, started_at=now,
                                        worker=worker, fence=fence, extra=extra))
                shard_log.start(revision, worker, ctx.job_id, fence)
                slock.install()
                log.info("migration %s on %s: running (fence %d%s)", revision, pod, fence,
                         f", resuming after {skip} applied statement(s)" if skip else "")
                statements = StatementLog(conn, shard_log, revision, earlier, skip)
                apply(conn, revisions, revision, statements)
                applied = True
                slock.uninstall()
                shard_log.finish(RunState.COMPLETE)
            finally:
                slock.release()
        if call is not None:
            return _start_backfill(ctx, store, run, pod, revision, call)
        _finish(store, run, RunState.COMPLETE)
        log.info("migration %s on %s: complete", revision, pod)
        return {"result": RunState.COMPLETE.value}
    except Reenqueue:
        raise  # put back (this worker lacks the revision): not a failure
    except Exception as exc:
        if applied:
            # the revision is on the shard; recording it (or its backfill) failed: the job's
            # retry finds the shard at the revision and finishes the bookkeeping
            log.warning("migration %s on %s: applied, but %s; the job will retry", revision, pod,
                        exc)
            raise
        return _failed(ctx, store, pod, revision, fence, exc, shard_log, eng)


#: seconds before a worker that lacks a revision (older code) puts its job back for another
NOT_HERE_DELAY = 2.0


def _not_here_yet(ctx: Any, store: RunStore, run: Run, revision: str,
                  directory: str) -> dict[str, Any]:
    """This worker's copy of `directory` lacks `revision` (it runs the code before the
    deploy): say so in the still-queued record and put the job back for a worker that has
    it. Never a failure: restart order must not halt a rollout."""
    note = (f"worker {ctx.worker_id or '?'} has no revision {revision} in {directory} (older "
            f"code?); put back for a worker that has it")
    log.warning("migration %s on %s: %s", revision, run.pod, note)
    if run.state == RunState.QUEUED and run.error != note:
        run.error = note
        try:
            store.update(run)
        except BadVersionError:
            pass
    raise Reenqueue(delay=NOT_HERE_DELAY, reason=f"no revision {revision} here yet")


def _failed(ctx: Any, store: RunStore, pod: str, revision: str, fence: int, exc: Exception,
            shard_log: ShardLog | None, eng: Any) -> dict[str, Any]:
    """Record an error that happened before the revision was applied."""
    cancelled = "cancelled by an operator" in str(exc)
    state = RunState.CANCELLED if cancelled else RunState.FAILED
    error = f"{type(exc).__name__}: {exc}"[:2000] if not isinstance(exc, _Permanent) else str(exc)
    log.error("migration %s on %s: %s", revision, pod, error)
    fresh = store.get(pod, revision)
    ours = fresh is not None and fresh.job_id == ctx.job_id
    if ours and fresh is not None and fresh.state == RunState.RUNNING and fresh.fence == fence:
        if shard_log is not None and shard_log.row_id is not None:
            _log_failure(shard_log, eng, state, error)
        applied = shard_log.applied if shard_log is not None else []
        _finish(store, fresh, state, error, extra={**fresh.extra, "applied": applied})
        return {"result": state.value, "error": error}
    if ours and fresh is not None and fresh.state == RunState.QUEUED:
        if isinstance(exc, _Permanent | StaleFence | UnsupportedShard):
            _finish(store, fresh, RunState.FAILED, error)
            return {"result": RunState.FAILED.value, "error": error}
        # not started: say why in the record and let the job's retries try again (after the
        # last one the job is dead and the leader fails the run with this error)
        fresh.error = f"attempt {ctx.attempt + 1}: {error}"
        try:
            store.update(fresh)
        except BadVersionError:
            pass
        raise exc
    return {"result": "superseded", "error": error}


def _log_failure(shard_log: ShardLog, eng: Any, state: RunState, error: str) -> None:
    try:
        shard_log.finish(state, error)
    except Exception:  # the connection may be the thing that died: use a fresh one
        try:
            with eng.connect() as c2:
                shard_log.conn = c2.execution_options(isolation_level="AUTOCOMMIT")
                shard_log.finish(state, error)
        except Exception as exc2:
            log.warning("could not record the failure on the shard: %s", exc2)


def _already_applied(ctx: Any, store: RunStore, run: Run, pod: str, revision: str, call: Any,
                     fence: int, worker: str) -> dict[str, Any]:
    """The shard has the revision: complete, unless its backfill has yet to be started."""
    if call is not None and not run.backfill_job and run.state == RunState.RUNNING:
        # an earlier run applied the schema step and died before it started the backfill
        return _start_backfill(ctx, store, run, pod, revision, call)
    if run.state == RunState.RUNNING and run.backfill_job:
        return {"result": "backfilling", "backfill_job": run.backfill_job}
    note = "already applied" if run.state == RunState.QUEUED else "an earlier run finished it"
    _finish(store, run, RunState.COMPLETE, fence=fence, worker=worker,
            extra={**run.extra, "note": note})
    return {"result": note}


def _start_backfill(ctx: Any, store: RunStore, run: Run, pod: str, revision: str,
                    call: Any) -> dict[str, Any]:
    """Record the backfill's job id, then enqueue it (the leader re-enqueues a vanished one)."""
    backfill_id = new_id()
    _finish(store, run, RunState.RUNNING, backfill_job=backfill_id,
            extra={**run.extra, "backfill_queued_at": time.time()})
    enqueue_backfill(ctx.backend, call, pod, backfill_id)
    log.info("migration %s on %s: schema step done; backfill %s enqueued", revision, pod,
             backfill_id)
    return {"result": "backfilling", "backfill_job": backfill_id}


def enqueue_backfill(backend: Any, call: Any, pod: str, job_id: str) -> None:
    """Enqueue a revision's backfill on `backend` (the pod's Redis) with the id `job_id`, and
    register it as an iteration job (so its progress is readable from the start)."""
    from podjobs.iteration import iterkeys as iter_keys
    from podjobs.iteration.store import lua_for

    p = call.payload(time.time_ns() // 1_000_000, None, pod)
    p["id"] = job_id
    backend.enqueue(p["queue"], [encode(p)])
    if isinstance(backend, RedisBackend):
        lua_for(backend).run("iter_register", "record an iteration job",
                             [iter_keys.job(job_id), iter_keys.INDEX],
                             [job_id, call.job.name, p["queue"], ""])


def pod_worker(zk: ZK, pod: str, config: WorkerConfig, *,
               max_buckets: int | None = None) -> PodWorker:
    """A pod's worker that also runs this migration job (`podjobs.migrate`), in
    process-isolation children too: what `podjobs worker --pod` runs. (The pods package
    knows nothing of the scheduler; this is where the two meet.)"""
    from podjobs.pods.podworker import PodWorker

    apps = list(config.app_modules)
    if __name__ not in apps:
        apps.append(__name__)
    return PodWorker(zk, pod, config._replace(app_modules=apps), max_buckets=max_buckets)
