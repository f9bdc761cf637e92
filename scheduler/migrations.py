"""The leader's migrations duty: find pending revisions per shard and queue them as jobs.

Each tick (only while leading; every write goes through the term):
1. Publishes the revision order (migrations/revisions) and each shard's alembic
   revision at migrations/shards/{pod} when it changed (deploy pipelines and the
   HTTP API read status from ZooKeeper). Shards are read by shardreads.ShardReader:
   concurrently, with short timeouts, and only when due (a pod's run records
   changed, a failed read, a periodic re-sync), so an idle pass reads no shard and
   a shard that does not answer holds no pass up. The pods and the run records come
   from in-memory mirrors (`ZK.mirror`, kazoo's TreeCache) while they are fresh, so
   an idle pass makes no ZooKeeper read per pod either; every write is still a
   versioned (compare-and-set) term transaction, so a mirror a moment behind costs
   a refused write, never a wrong one.
2. Looks after open runs: a running revision whose backfill job succeeded
   becomes complete (a cancelled backfill fails it); a queued run whose job
   is nowhere on its pod (the leader died between the record and the enqueue)
   is queued again; a running run whose runner is gone (no ZooKeeper lock
   holder, no job left) fails, so an operator looks at it.
3. Asks rollout.plan what to queue, creates the run records (pod, revision) of
   the whole wave in one term transaction, then enqueues `podjobs.migrate` with
   each record's job id straight on the pod's Redis, one enqueue per Redis
   (draining pods migrate too).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from podjobs.backend import RedisBackend
from podjobs.errors import BackendUnavailable
from podjobs.gateway import RedisError
from podjobs.ids import new_id
from podjobs.jobs import lookup
from podjobs.payload import encode
from podjobs.pods.topology import PODS, Pod, TopologyStore
from podjobs.pods.zk import ZK, BadVersionError, Mirror, NodeExistsError

from . import migrate as migrate_job  # noqa: F401 - registers podjobs.migrate
from . import paths
from .leader import NotLeader, Term
from .revisions import Revisions
from .rollout import ShardView, plan
from .runs import RunStore, commit_error
from .runstate import OPEN, Run, RunState, new_run, transition
from .shardreads import RESYNC_S, ShardReader

log = logging.getLogger(__name__)

#: run records created in one ZooKeeper transaction at most (a wave's; far under jute.maxbuffer)
QUEUE_CHUNK = 100


@dataclass
class MigrationsConfig:
    directory: str
    #: "hosts/root" the migration jobs use to reach ZooKeeper
    zk_spec: str
    zk_timeout: float = 10.0
    queue: str = "default"
    canary: str | None = None
    wave_size: int = 1
    #: seconds a queued run may go without its job being found before it is queued again
    requeue_after: float = 10.0
    #: seconds a running run may have no lock holder before it is failed
    orphan_after: float = 10.0
    steal_after: float = 5.0
    #: seconds a DDL may wait for a table's metadata lock (MySQL lock_wait_timeout)
    lock_wait_timeout: int = 60
    #: seconds after which a shard's revision is read again though none of its runs changed
    resync_after: float = RESYNC_S


class MigrationsDuty:
    name = "migrations"

    def __init__(self, zk: ZK, config: MigrationsConfig) -> None:
        self.zk = zk
        self.config = config
        self.revisions = Revisions(config.directory)
        self.store = RunStore(zk)
        self.topology = TopologyStore(zk)
        self._backends: dict[str, RedisBackend] = {}
        self._published: dict[str, Any] = {}
        #: node versions this term wrote (the shards' published readings)
        self._versions: dict[str, int] = {}
        self._parents: set[str] = set()
        self._term: int | None = None
        #: (pod, revision) -> when the leader last looked for a queued run's job in Redis
        self._checked: dict[tuple[str, str], float] = {}
        #: reads the shards' revisions (concurrently, short timeouts, only when due)
        self.reader = ShardReader(resync_s=config.resync_after)
        #: pod -> its run records' (revision, state, version) at the last pass
        self._marks: dict[str, list[tuple[str, str, int]]] = {}
        #: in-memory copies of migrations/runs, migrations/halts and pods (kazoo TreeCache),
        #: made on first use
        self._mirrors: dict[str, Mirror] = {}

    def backend(self, url: str) -> RedisBackend:
        b = self._backends.get(url)
        if b is None:
            b = self._backends[url] = RedisBackend(url)
        return b

    # -- what the leader reads every pass: from memory (ZK.mirror) while fresh -------

    def _mirror(self, which: str) -> Mirror:
        m = self._mirrors.get(which)
        if m is None:
            path = {"runs": self.zk.path("migrations", "runs"), "halts": paths.halts(self.zk),
                    "pods": self.zk.path(PODS)}[which]
            m = self._mirrors[which] = self.zk.mirror(path)
        return m

    def _pods(self) -> dict[str, Pod]:
        m = self._mirror("pods")
        base = m.path
        names = m.children(base)
        if names is not None:
            out: dict[str, Pod] = {}
            for n in names:
                try:
                    got = m.get_json(f"{base}/{n}")
                    if got is not None:
                        out[n] = Pod.from_json(n, got[0])
                except ValueError as exc:
                    log.warning("skipping pod %s: %s", n, exc)
            if m.fresh:
                return dict(sorted(out.items()))
        read: dict[str, Pod] = self.topology.pods()
        return read

    def close(self) -> None:
        for m in self._mirrors.values():
            m.close()
        self._mirrors.clear()
        self.reader.close()

    # -- one tick ----------------------------------------------------------------

    def tick(self, term: Term) -> None:
        if term.fence != self._term:  # another leader may have written since our last term
            self._published.clear()
            self._versions.clear()
            self.reader.forget()
            self._marks = {}
            self._term = term.fence
        pods = self._pods()
        self._publish(term, paths.revisions(self.zk), {
            "order": self.revisions.order, "head": self.revisions.head,
            "directory": self.revisions.directory})
        views = []
        runs = self.store.all(sorted(pods), self._mirror("runs"))
        marks = {name: sorted((r, run.state.value, run.version) for r, run in rs.items())
                 for name, rs in runs.items()}
        changed = {name for name, m in marks.items() if self._marks.get(name) != m}
        self._marks = marks
        readings = self.reader.readings({n: p.shard_url for n, p in pods.items()}, changed)
        pubs: list[tuple[str, dict[str, Any]]] = []
        for name, pod in sorted(pods.items()):
            reading = readings[name]
            cur, known, err = reading.current, reading.known, reading.error
            if not known:
                log.warning("migrations: cannot read shard of pod %s: %s", name, err)
            if not reading.pending:
                pub = {"current": cur, "error": err} if known else {"error": err}
                pubs.append((paths.shard(self.zk, name), pub))
            if known:
                cur_ok = cur is None or cur in self.revisions.by_id
                if not cur_ok:
                    known = False
                    log.error("migrations: pod %s is at %s, unknown to %s", name, cur,
                              self.revisions.directory)
            views.append(ShardView(name, cur, {r: run.state.value for r, run in runs[name].items()},
                                   known))
            for run in runs[name].values():
                if run.state in OPEN:
                    try:
                        self._look_after(term, run, pod.redis_url)
                    except (RedisError, BackendUnavailable) as exc:  # other pods go on
                        log.warning("migrations: pod %s's Redis: %s", name, exc)
        self._publish_many(term, pubs)
        halted = set(self.store.halts(self._mirror("halts")))
        canary = self.config.canary or (min(pods) if pods else None)
        planned = plan(self.revisions.order, views, halted, canary, self.config.wave_size)
        self.store.ensure_parents(p for p, _ in planned)
        for i in range(0, len(planned), QUEUE_CHUNK):
            self._queue_new(term, planned[i:i + QUEUE_CHUNK], pods)

    def _publish_many(self, term: Term, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Publish the shards' readings that changed (stamped with checked_at) in one
        transaction of the term: one pipelined read of the nodes whose version this term
        has not written yet, one commit (was: a read and a commit per shard, ~300 round
        trips a pass over 100 shards in a rollout). On a conflict, one at a time."""
        todo = [(p, o) for p, o in items if self._published.get(p) != o]
        if not todo:
            return
        term.check()
        unknown = [p for p, _ in todo if p not in self._versions]
        if unknown:
            got = self.zk.get_many_json(unknown)
            for p in unknown:
                v = got.get(p)
                self._versions[p] = v[1] if isinstance(v, tuple) else -1  # -1: create it
        parent = todo[0][0].rsplit("/", 1)[0]
        if parent not in self._parents and any(self._versions[p] < 0 for p, _ in todo):
            self.zk.ensure_path(parent)
            self._parents.add(parent)
        now = time.time()
        txn = term.transaction()
        for p, o in todo:
            raw = json.dumps(dict(o, checked_at=now), sort_keys=True).encode()
            if self._versions[p] < 0:
                txn.create(p, raw)
            else:
                txn.set_data(p, raw, version=self._versions[p])
        if _commit(txn):
            for p, o in todo:
                self._versions[p] += 1  # created: -1 -> 0
                self._published[p] = o
            return
        for p, o in todo:  # someone else wrote one of them (an operator's tool): one by one
            self._versions.pop(p, None)
            self._publish(term, p, o, stamp=True)

    def _publish(self, term: Term, path: str, obj: dict[str, Any], stamp: bool = False) -> None:
        if self._published.get(path) == obj:
            return
        data = dict(obj, checked_at=time.time()) if stamp else obj
        term.check()
        got = self.zk.get_json(path)
        if got is None:
            self.zk.ensure_path(path.rsplit("/", 1)[0])
        txn = term.transaction()
        raw = json.dumps(data, sort_keys=True).encode()
        if got is None:
            txn.create(path, raw)
        else:
            txn.set_data(path, raw, version=got[1])
        if _commit(txn):
            self._published[path] = obj
            self._versions[path] = 0 if got is None else got[1] + 1

    # -- queue a run ---------------------------------------------------------------

    def _payload(self, pod: str, revision: str, job_id: str) -> str:
        jd = lookup(migrate_job.JOB_NAME)
        c = self.config
        p = jd.call(c.zk_spec, pod, revision, self.revisions.directory, zk_timeout=c.zk_timeout,
                    steal_after=c.steal_after, lock_wait_timeout=c.lock_wait_timeout,
                    ).payload(time.time_ns() // 1_000_000, None, pod)
        p["id"] = job_id
        p["queue"] = c.queue
        return encode(p)

    def _queue_new(self, term: Term, planned: list[tuple[str, str]], pods: dict[str, Pod]) -> None:
        """Queue runs that have no record yet: every record in one term transaction, then the
        jobs, one enqueue per Redis (was: a transaction and an enqueue per run in turn, so the
        last run of a wave of 10 was queued 0.3-0.9 s after the first). If the transaction is
        refused (a record made meanwhile, e.g. by an operator's skip), one run at a time."""
        if not planned:
            return
        term.check()
        now, by = time.time(), str(term.identity["id"])
        batch: list[tuple[Run, str, str]] = []
        for pod, revision in planned:
            job_id = new_id()
            run = new_run(pod, revision, RunState.QUEUED, now=now, job_id=job_id,
                          queued_by=by, queued_term=term.fence)
            batch.append((run, self._payload(pod, revision, job_id), pods[pod].redis_url))
        if len(batch) > 1 and not self.store.create_many([r for r, _, _ in batch],
                                                         term.transaction()):
            for run, _, url in batch:
                try:
                    self._queue(term, run.pod, run.revision, url)
                except (RedisError, BackendUnavailable) as exc:
                    log.warning("migrations: cannot queue %s on %s: %s", run.revision, run.pod,
                                exc)
            return
        if len(batch) == 1 and not self.store.create(batch[0][0], term.transaction()):
            return
        by_redis: dict[str, list[tuple[Run, str]]] = {}
        for run, text, url in batch:
            by_redis.setdefault(url, []).append((run, text))
        for url, items in by_redis.items():
            term.check()
            try:
                self.backend(url).enqueue(self.config.queue, [t for _, t in items])
            except (RedisError, BackendUnavailable) as exc:  # queued again after requeue_after
                log.warning("migrations: cannot queue %s: %s", ", ".join(
                    f"{r.revision} on {r.pod}" for r, _ in items), exc)
                continue
            for run, _ in items:
                log.info("migrations: queued %s on %s (job %s, term %d)", run.revision, run.pod,
                         run.job_id, term.fence)

    def _queue(self, term: Term, pod: str, revision: str, redis_url: str, run: Run | None = None) -> None:
        term.check()
        job_id = new_id()
        text = self._payload(pod, revision, job_id)
        now, by = time.time(), str(term.identity["id"])
        if run is None:
            run = new_run(pod, revision, RunState.QUEUED, now=now, job_id=job_id,
                          queued_by=by, queued_term=term.fence)
            if not self.store.create(run, term.transaction()):
                return
        else:
            transition(run, RunState.QUEUED, now=now, job_id=job_id, queued_at=now,
                       attempts=run.attempts + 1, queued_by=by, queued_term=term.fence)
            try:
                self.store.update(run, term.transaction())
            except BadVersionError:
                return
        term.check()
        self.backend(redis_url).enqueue(self.config.queue, [text])
        log.info("migrations: queued %s on %s (job %s, term %d)", revision, pod, job_id, term.fence)

    # -- open runs -----------------------------------------------------------------

    def _job_where(self, redis_url: str, job_id: str) -> str | None:
        from podjobs.errors import JobNotFound
        from podjobs.ops import Inspector

        try:
            return Inspector(self.backend(redis_url)).find_job(job_id).where
        except JobNotFound:
            return None

    def _look_after(self, term: Term, run: Run, redis_url: str) -> None:
        now = time.time()
        if run.state == RunState.RUNNING and run.backfill_job:
            self._follow_backfill(term, run, redis_url)
            return
        if run.state == RunState.QUEUED and now - run.queued_at > self.config.requeue_after:
            key = (run.pod, run.revision)
            if now - self._checked.get(key, 0.0) < self.config.requeue_after:
                return  # a queue scan at most once per requeue_after per run
            self._checked[key] = now
            where = self._job_where(redis_url, run.job_id)
            if where is None:
                log.warning("migrations: job %s of %s on %s is gone; queueing it again",
                            run.job_id, run.revision, run.pod)
                self._queue(term, run.pod, run.revision, redis_url, run)
            elif where == "dead":
                self._fail(term, run, f"the migration job {run.job_id} died"
                                      + (f" ({run.error})" if run.error else "")
                                      + "; see 'podjobs dead list'")
            return
        if run.state == RunState.RUNNING and run.started_at and \
                now - run.started_at > self.config.orphan_after:
            if self.zk.children(paths.lock(self.zk, run.pod)):
                return
            where = self._job_where(redis_url, run.job_id)
            if where is not None and where != "dead":
                return  # a worker is about to take it again
            fresh = self.store.get(run.pod, run.revision)
            if fresh is None or fresh.state != RunState.RUNNING or fresh.version != run.version:
                return
            self._fail(term, run, f"the runner (worker {run.worker}) is gone and nothing holds "
                                  f"the shard lock; the revision may be half applied")

    def _fail(self, term: Term, run: Run, error: str, state: RunState = RunState.FAILED) -> None:
        transition(run, state, now=time.time(), error=error)
        try:
            self.store.update(run, term.transaction())
        except BadVersionError:
            return
        term.check()
        self.store.halt(run.revision, run.pod, error)
        log.error("migrations: %s on %s %s: %s", run.revision, run.pod, state.value, error)

    def _follow_backfill(self, term: Term, run: Run, redis_url: str) -> None:
        from podjobs.iteration.admin import Iterations
        from podjobs.iteration.state import State

        its = Iterations(self.backend(redis_url))
        if run.cancel_requested:
            try:
                its.cancel(run.backfill_job)
            except Exception as exc:  # already final, or gone
                log.info("cancel backfill %s: %s", run.backfill_job, exc)
            self._fail(term, run, f"cancelled by an operator (backfill {run.backfill_job} "
                                  f"cancelled)", RunState.CANCELLED)
            return
        prog = its.get(run.backfill_job)
        if prog is None:
            self._backfill_vanished(term, run, redis_url)
            return
        progress = {"done": prog.done, "total": prog.total, "percent": prog.percent,
                    "state": prog.state.value}
        changed = run.extra.get("progress") != progress
        run.extra = dict(run.extra, progress=progress)
        if prog.state == State.SUCCEEDED:
            transition(run, RunState.COMPLETE, now=time.time())
            try:
                self.store.update(run, term.transaction())
            except BadVersionError:
                return
            log.info("migrations: %s on %s complete (backfill %s done)", run.revision, run.pod,
                     run.backfill_job)
        elif prog.state == State.CANCELLED:
            self._fail(term, run, f"its backfill {run.backfill_job} was cancelled")
        elif prog.state == State.ERRORED and \
                self._job_where(redis_url, run.backfill_job) in (None, "dead"):
            self._fail(term, run, f"its backfill {run.backfill_job} died: {prog.error}")
        elif changed:
            try:
                self.store.update(run, term.transaction())
            except BadVersionError:
                return

    def _backfill_vanished(self, term: Term, run: Run, redis_url: str) -> None:
        """No progress record: enqueue the backfill again if its job is nowhere (the runner
        died between recording its id and enqueueing it)."""
        from .migrate import enqueue_backfill

        since = float(run.extra.get("backfill_queued_at") or run.started_at or 0)
        if time.time() - since < self.config.requeue_after:
            return
        if self._job_where(redis_url, run.backfill_job) is not None:
            return
        call = self.revisions.backfill_call(run.revision)
        if call is None:
            self._fail(term, run, f"backfill {run.backfill_job} is gone and {run.revision} no "
                                  f"longer defines one")
            return
        run.extra = dict(run.extra, backfill_queued_at=time.time())
        try:
            self.store.update(run, term.transaction())
        except BadVersionError:
            return
        term.check()
        enqueue_backfill(self.backend(redis_url), call, run.pod, run.backfill_job)
        log.warning("migrations: backfill %s of %s on %s was never enqueued; enqueued it",
                    run.backfill_job, run.revision, run.pod)


def _commit(txn: Any) -> bool:
    err = commit_error(txn.commit())
    if isinstance(err, NodeExistsError | BadVersionError):
        return False
    if err is not None:
        raise NotLeader(f"ZooKeeper refused a scheduler write ({err!r}): leadership lost?")
    return True
