"""Moving a tenant from one pod to another without losing or doubling a job.

The move is recorded in the tenant's directory entry (`move`), step by step,
each step before it acts, so a mover killed at any point (kill -9) can be
resumed or rolled back by another process:

    active on P1
      │ start: marker pj:moving:T on P2; entry state=moving, move.step=quiesce,
      │        move.since_version = the entry's version when it became moving
      ▼
    quiesce   every live worker of P1 acked: it saw the move and runs none of
      │       T's jobs (running ones finish first). New jobs for T are held on P2.
      │       A worker whose heartbeat is gone is reaped (its jobs requeued), but
      │       first T's fence on P1's shard goes up (pods/fence.py); it goes up at
      │       the end of the step anyway: from then on a job of T admitted on P1
      │       before the move (a paused worker waking up) cannot commit there.
      ▼
    carry     T's unsent outbox rows on P1's shard (podjobs.transactional): each job's
      │       sent marker on P1's Redis claimed for the move (so P1's relay, which may
      │       have read the row already, writes nothing when it pushes it), the job
      │       held on P2 by id, the row deleted; a job P1's relay pushed first is on
      │       P1's queue and is carried with the others. Then
      │       T's queued, scheduled and retrying jobs on P1 -> P1's staging hash
      │       (atomic per job) -> P2's held hash by job id (a due time kept in
      │       pj:helddue:T) -> cleared from the staging. Held jobs never run nor
      │       come due before the release; holding twice holds once.
      ▼
    copy_data T's ctx.once keys P1 shard -> P2 shard (jobs-only moves too);
      │       the application's copy hooks copy T's data P1 shard -> P2 shard
      ▼
    flip      entry: pod=P2, state=active (compare-and-set), move.step=release
      ▼
    release   outbox rows of T committed on P1 since the carry are taken the same way;
      │       P2's held jobs of T go onto their queues (or back into their
      │       scheduled/retry sets), oldest first, atomically per batch; the
      │       marker goes, so late holders enqueue directly; entry.move cleared
      ▼
    active on P2

Rollback, until the flip (`--rollback`; `--resume` of a rollback finishes it):

    moving (any step before release)
      │ record: entry pod=P1, state=active, move.step=rollback (compare-and-set)
      ▼
    rollback  1. jobs still in P1's staging (a carry killed after holding them on
      │          P2) are dropped from P2's held hash by id, then held on P1;
      │       2. P2's held, queued, scheduled and retrying jobs of T -> P2's staging
      │          (atomic per job) -> P1's held hash by id -> cleared from P2's staging;
      │       3. P1 releases what it holds; 2-3 again until P2 holds nothing and
      │          its marker is gone; entry.move cleared
      ▼
    active on P1

Every write is atomic on one Redis or keyed by job id on the receiving pod, and
nothing received is released while the sender still stages it, so a step run
again after a kill does each job once. A job of T never runs on P1 once its
workers acked (or were fenced), and never twice because of the move.
`PODJOBS_MOVE_CRASH_AT` (pods/crashpoints.py) kills the mover at named points,
for the fault tests.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum
from typing import Any

from podjobs import effects, keys, transactional
from podjobs.backend import RedisBackend
from podjobs.errors import ConfigurationError, NotSupported, PodjobsError
from podjobs.gateway import text
from podjobs.ids import new_id

from . import fence
from .crashpoints import crash_point
from .topology import Pod, PodState, TenantEntry, TenantState, TopologyStore
from .zk import ZK

log = logging.getLogger("podjobs.moves")

#: a data-copy hook: (tenant, source pod, destination pod); must be idempotent
CopyHook = Callable[[str, Pod, Pod], None]
_hooks: list[CopyHook] = []


def copy_hook(fn: CopyHook) -> CopyHook:
    """Register the application's data copy for tenant moves (in the --app module)."""
    _hooks.append(fn)
    return fn


def copy_hooks() -> list[CopyHook]:
    return list(_hooks)


class MoveStep(StrEnum):
    QUIESCE = "quiesce"
    CARRY = "carry"
    COPY_DATA = "copy_data"
    FLIP = "flip"
    RELEASE = "release"


#: the step a rollback records (entry back on the source) before it returns any job
ROLLBACK = "rollback"


class MoveError(PodjobsError):
    """A move could not go on; the entry keeps the step so it can be resumed or rolled back."""


def _now() -> float:
    return round(time.time(), 3)


class Mover:
    def __init__(self, zk: ZK, *, quiesce_timeout: float = 60.0, jobs_only: bool = False,
                 progress: Callable[[str], None] | None = None,
                 on_step: Callable[[int, int, str], None] | None = None) -> None:
        self.store = TopologyStore(zk)
        self.quiesce_timeout = quiesce_timeout
        self.jobs_only = jobs_only
        self.progress = progress or (lambda msg: log.info("%s", msg))
        #: called as each step starts: (steps done, steps in all, the step's name)
        self.on_step = on_step or (lambda done, total, name: None)
        self._backends: dict[str, RedisBackend] = {}
        self._fenced: tuple[str, str] | None = None

    def backend(self, pod: str) -> RedisBackend:
        b = self._backends.get(pod)
        if b is None:
            b = self._backends[pod] = RedisBackend(self.store.pod(pod).redis_url)
        return b

    # -- entry points ---------------------------------------------------------------

    def move(self, tenant: str, to: str) -> TenantEntry:
        entry = self.store.where(tenant)
        if entry.move:
            raise MoveError(
                f"tenant {tenant!r} already has a move to {entry.move.get('to')} at step "
                f"{entry.move.get('step')}; resume it with 'podjobs tenants move {tenant} --resume' "
                f"or undo it with --rollback")
        if entry.pod == to:
            raise ConfigurationError(f"tenant {tenant!r} already lives on pod {to}")
        dest = self.store.pod(to)
        if dest.state != PodState.ACTIVE:
            raise ConfigurationError(f"pod {to} is {dest.state}; a tenant can only move to an active pod")
        for name, p in ((entry.pod, self.store.pod(entry.pod)), (to, dest)):
            if p.backend != "redis":
                raise NotSupported(
                    f"moving tenant {tenant!r}: pod {name} keeps its queue on the SQL backend, and "
                    f"tenant moves are not supported on the SQL backend yet; move tenants between "
                    f"pods that run on Redis")
        if not self.jobs_only and not _hooks:
            raise ConfigurationError(
                "no data-copy hook is registered: pass --app MODULE whose module registers one "
                "with @podjobs.pods.moves.copy_hook, or --jobs-only to move only the jobs")
        move: dict[str, Any] = {"id": new_id(), "from": entry.pod, "to": to, "step": MoveStep.QUIESCE.value,
                "started": _now(), "updated": _now(), "error": None, "jobs_only": self.jobs_only}
        self.backend(to).mark_moving(tenant, move["id"])
        self.backend(entry.pod).clear_move_acks(tenant)
        entry = self.store.set_tenant(replace(entry, state=TenantState.MOVING, move=move))
        # workers ack with the version they saw; acks older than this move's start do not count
        entry = self.store.set_tenant(replace(entry, move={**move, "since_version": entry.version}))
        self.progress(f"{tenant}: moving {entry.pod} -> {to}; new jobs are held on {to}")
        return self._run(entry)

    def resume(self, tenant: str) -> TenantEntry:
        entry = self.store.where(tenant)
        if not entry.move:
            raise MoveError(f"tenant {tenant!r} has no move in progress")
        if entry.move.get("step") == ROLLBACK:
            self.progress(f"{tenant}: a rollback of this move was started; finishing it")
            return self.rollback(tenant)
        self.jobs_only = bool(entry.move.get("jobs_only", self.jobs_only))
        return self._run(entry)

    def rollback(self, tenant: str) -> TenantEntry:
        """Undo a move that has not flipped (or finish a rollback that stopped).

        The rollback is recorded first (entry back on the source, active, move.step
        rollback), then jobs are returned by id, so running it again after any stop
        finishes it with nothing lost or doubled (see the module docstring)."""
        entry = self.store.where(tenant)
        move = entry.move
        if not move:
            raise MoveError(f"tenant {tenant!r} has no move in progress")
        if move.get("step") != ROLLBACK:
            if entry.state == TenantState.ACTIVE:
                raise MoveError(
                    f"the move of {tenant!r} to {move['to']} has flipped already; finish it with "
                    f"--resume, then move the tenant back if needed")
            entry = self.store.set_tenant(replace(
                entry, pod=str(move["from"]), state=TenantState.ACTIVE,
                move={**move, "step": ROLLBACK, "updated": _now(), "error": None}))
        crash_point("rollback_recorded")
        try:
            back = self._return_jobs(tenant, str(move["to"]), str(move["from"]))
        except Exception as exc:
            latest = self.store.where(tenant)
            if latest.move is not None:
                self.store.set_tenant(replace(latest, move={**latest.move, "error": str(exc),
                                                            "updated": _now()}))
            raise MoveError(
                f"rollback of the move of {tenant!r} stopped: {exc}; fix the cause, then run "
                f"'podjobs tenants move {tenant} --rollback' again") from exc
        self.backend(str(move["from"])).clear_move_acks(tenant)
        entry = self.store.set_tenant(replace(self.store.where(tenant), move=None))
        self.progress(f"{tenant}: move rolled back; {back} job(s) returned to {move['from']}")
        return entry

    # -- the steps ------------------------------------------------------------------

    def _run(self, entry: TenantEntry) -> TenantEntry:
        assert entry.move is not None
        steps = list(MoveStep)
        i = steps.index(MoveStep(entry.move["step"]))
        for step in steps[i:]:
            self.on_step(steps.index(step), len(steps), step.value)
            entry = self._advance(entry, step)
            crash_point(f"before_{step.value}")
            try:
                entry = getattr(self, f"_{step.value}")(entry)
            except Exception as exc:
                assert entry.move is not None
                latest = self.store.where(entry.tenant)
                if latest.move is not None:
                    self.store.set_tenant(replace(latest, move={**latest.move, "error": str(exc),
                                                                "updated": _now()}))
                raise MoveError(
                    f"move of {entry.tenant!r} stopped at step {step.value}: {exc}; fix the cause, "
                    f"then 'podjobs tenants move {entry.tenant} --resume' (or --rollback"
                    f"{'' if steps.index(step) < steps.index(MoveStep.FLIP) else ', before the flip only'})"
                ) from exc
        self.on_step(len(steps), len(steps), "done")
        return entry

    def _advance(self, entry: TenantEntry, step: MoveStep) -> TenantEntry:
        assert entry.move is not None
        if entry.move.get("step") == step.value and not entry.move.get("error"):
            return entry
        return self.store.set_tenant(replace(entry, move={**entry.move, "step": step.value,
                                                          "updated": _now(), "error": None}))

    def _quiesce(self, entry: TenantEntry) -> TenantEntry:
        assert entry.move is not None
        src = self.backend(str(entry.move["from"]))
        deadline = time.monotonic() + self.quiesce_timeout
        delay = 0.01
        while True:
            waiting = self._unacked(src, entry)
            if not waiting:
                self._fence(entry)  # before the data copy: no late commit on the source shard
                self.progress(f"{entry.tenant}: every worker of {entry.move['from']} stopped running its jobs")
                return entry
            if time.monotonic() > deadline:
                raise MoveError(f"workers {', '.join(sorted(waiting))} of pod {entry.move['from']} did not "
                                f"confirm within {self.quiesce_timeout} s that they run none of "
                                f"{entry.tenant}'s jobs")
            time.sleep(delay)
            delay = min(0.2, delay * 1.5)

    def _unacked(self, src: RedisBackend, entry: TenantEntry) -> set[str]:
        """Registered workers of the source pod that have not confirmed the move.

        A worker whose heartbeat is gone is reaped here (its jobs go back to the queue,
        to be carried); it may only be paused and wake later, so the tenant's fence goes
        up on the source shard first: that worker's commits of the tenant's jobs are
        refused from then on (pods/fence.py)."""
        dead = src.dead_worker_ids()
        if dead:
            self._fence(entry)
        for wid, queues in dead:
            src.recover(wid, queues)
        workers = src.worker_ids()
        since = int((entry.move or {}).get("since_version", 0))
        acks = {w for w, v in src.move_acks(entry.tenant).items() if v >= since}
        return workers - acks

    def _fence(self, entry: TenantEntry) -> None:
        """Raise the tenant's fence on the source shard to the move's first version."""
        assert entry.move is not None
        move_id, version = str(entry.move["id"]), int(entry.move.get("since_version", entry.version))
        if self._fenced == (entry.tenant, move_id):
            return
        fence.raise_fence(self.store.pod(str(entry.move["from"])).shard_url, entry.tenant, version, move_id)
        self._fenced = (entry.tenant, move_id)

    def _carry(self, entry: TenantEntry) -> TenantEntry:
        assert entry.move is not None
        src, dst = self.backend(str(entry.move["from"])), self.backend(str(entry.move["to"]))
        o = self._carry_outbox(entry, src, dst)
        n = self._carry_jobs(entry.tenant, src, dst)
        self.progress(f"{entry.tenant}: carried {n} queued, scheduled and retrying job(s) and {o} "
                      f"unsent outbox job(s) to {entry.move['to']}")
        return entry

    def _copy_data(self, entry: TenantEntry) -> TenantEntry:
        assert entry.move is not None
        src, dst = self.store.pod(str(entry.move["from"])), self.store.pod(str(entry.move["to"]))
        # the tenant's ctx.once keys (final: its fence is up on the source), jobs-only too
        n = effects.copy_keys(src.shard_url, dst.shard_url, entry.tenant)
        if n:
            self.progress(f"{entry.tenant}: {n} ctx.once key(s) copied to {dst.name}")
        if self.jobs_only:
            self.progress(f"{entry.tenant}: --jobs-only: no data copied")
            return entry
        for hook in _hooks:
            hook(entry.tenant, src, dst)
        self.progress(f"{entry.tenant}: data copied by {len(_hooks)} hook(s)")
        return entry

    def _flip(self, entry: TenantEntry) -> TenantEntry:
        assert entry.move is not None
        to = str(entry.move["to"])
        entry = self.store.set_tenant(replace(entry, pod=to, state=TenantState.ACTIVE,
                                              move={**entry.move, "step": MoveStep.RELEASE.value,
                                                    "flipped": _now(), "updated": _now()}))
        self.progress(f"{entry.tenant}: the directory now says {to}")
        return entry

    def _release(self, entry: TenantEntry) -> TenantEntry:
        assert entry.move is not None
        dst = self.backend(str(entry.move["to"]))
        late = self._carry_outbox(entry, self.backend(str(entry.move["from"])), dst)
        if late:
            self.progress(f"{entry.tenant}: {late} outbox job(s) committed on {entry.move['from']} "
                          f"during the move carried too")
        total = 0
        for _ in range(1000):
            total += self._release_held(entry.tenant, dst)
            crash_point("released")
            if dst.end_hold(entry.tenant) == 0:
                break
        else:
            raise MoveError("jobs kept arriving in the held set; try --resume again")
        self.backend(str(entry.move["from"])).clear_move_acks(entry.tenant)
        entry = self.store.set_tenant(replace(entry, move=None))
        self.progress(f"{entry.tenant}: released {total} held job(s) on {entry.pod}; move done")
        return entry

    # -- moving jobs between pods -----------------------------------------------------

    @staticmethod
    def _mine(tenant: str, raw: bytes | str) -> dict[str, Any] | None:
        needle = f'"tenant":{json.dumps(tenant)}'
        s = text(raw)
        if needle not in s:
            return None
        try:
            data = json.loads(s)
        except ValueError:
            return None
        return data if isinstance(data, dict) and data.get("tenant") == tenant else None

    def _carry_jobs(self, tenant: str, src: RedisBackend, dst: RedisBackend) -> int:
        """Take the tenant's jobs off the source into its staging hash (atomically per
        job), then hold them on the destination by id, then clear the staging. Resumable:
        a stop between the two leaves the jobs staged, held again (once) on the next run."""
        self._send(tenant, src, dst, "carry_written")
        self._stage_all(tenant, src)
        return self._send(tenant, src, dst, "carry_written")

    def _carry_outbox(self, entry: TenantEntry, src: RedisBackend, dst: RedisBackend) -> int:
        """The tenant's unsent outbox rows on the source shard -> held on the destination.

        Per batch, in row order: claim the jobs' sent markers on the source Redis for this
        move (lua/outbox_claim.lua), hold the claimed ones on the destination by id, delete
        the rows. A job whose marker the source's relay set first is already on the
        source's queue (carried next, or forwarded by its workers' tenant check). Killed
        anywhere and resumed: the same move id claims the same jobs again, and holding
        twice holds once; so each job is enqueued once, released in id order with the
        tenant's other jobs."""
        assert entry.move is not None
        url = self.store.pod(str(entry.move["from"])).shard_url
        owner = f"move:{entry.move['id']}"
        total = 0
        while True:
            rows = transactional.tenant_rows(url, entry.tenant, 500)
            if not rows:
                return total
            mine = src.outbox_claim([r.job_id for r in rows], owner)
            now = time.time_ns() // 1_000_000
            dst.accept(entry.tenant, [
                (r.job_id, "sched" if r.due_ms > now else "queue",
                 str(r.due_ms) if r.due_ms > now else "0", r.payload)
                for r, m in zip(rows, mine, strict=True) if m])
            crash_point("outbox_held")
            transactional.delete_rows(url, [r.id for r in rows])
            total += sum(mine)

    def _stage_all(self, tenant: str, b: RedisBackend) -> None:
        """The tenant's queued, scheduled and retrying jobs on a pod -> its staging hash."""
        for q in b.queue_names():
            ready = [(d["id"], text(raw), 0.0) for raw in b.queued(q)
                     if (d := self._mine(tenant, raw)) is not None]
            self._stage(b, tenant, keys.queue(q), "queue", q, ready)
            # its own list (fair share): every job in it is the tenant's
            own = keys.tenant_queue(q, tenant)
            ready = [(d["id"], text(raw), 0.0) for raw in b.queued(q, own)
                     if (d := self._mine(tenant, raw)) is not None]
            self._stage(b, tenant, own, "queue", q, ready)
            for kind, zkey in (("sched", keys.scheduled(q)), ("retry", keys.retry(q))):
                rows = [(str(json.loads(m)["id"]), m, s) for m, s in self._zrows(b, zkey, tenant)]
                self._stage(b, tenant, zkey, kind, q, rows)

    @staticmethod
    def _stage(src: RedisBackend, tenant: str, key: str, kind: str, queue: str,
               rows: list[tuple[str, str, float]]) -> None:
        for i in range(0, len(rows), 300):
            src.carry(tenant, key, kind, queue, rows[i : i + 300])

    def _send(self, tenant: str, frm: RedisBackend, to: RedisBackend, point: str) -> int:
        """Hold `frm`'s staged jobs on `to` (by job id: sending twice holds once), then
        clear them from the staging. Nothing sent can run before `_release_held`."""
        staged = {k: json.loads(v) for k, v in frm.staged(tenant).items()}
        if not staged:
            return 0
        ids = sorted(staged)  # ids sort by enqueue time
        for i in range(0, len(ids), 500):
            to.accept(tenant, [(jid, str(staged[jid][0]), _score(staged[jid][2]), str(staged[jid][3]))
                               for jid in ids[i : i + 500]])
        crash_point(point)
        return frm.take(keys.carry(tenant), "hash", ids)

    def _zrows(self, b: RedisBackend, zkey: str, tenant: str) -> list[tuple[str, float]]:
        """Members of a sorted set that belong to the tenant, with their scores."""
        return [(text(m), s) for m, s in b.due_set(zkey) if self._mine(tenant, m) is not None]

    def _release_held(self, tenant: str, dst: RedisBackend) -> int:
        """Release the tenant's held jobs on a pod, oldest first, atomically per batch."""
        held = dst.held(tenant)
        if not held:
            return 0
        n = 0
        batch: list[str] = []
        queue = None
        for jid in sorted(held):  # ids sort by enqueue time
            q = str(json.loads(held[jid]).get("queue", "default"))
            if (q != queue and batch) or len(batch) >= 1000:
                n += dst.release(tenant, str(queue), batch)
                batch = []
            queue = q
            batch.append(jid)
        if batch:
            n += dst.release(tenant, str(queue), batch)
        return n

    def _return_jobs(self, tenant: str, dst_name: str, src_name: str) -> int:
        """Rollback: every job of the tenant on the destination goes back to the source.

        1. Jobs still staged on the source (a carry stopped after holding them on the
           destination): dropped from the destination's held hash by id, then held on
           the source. 2. The destination's held, queued, scheduled and retrying jobs:
           staged there (atomically per job), held on the source by id, cleared from the
           staging. 3. The source releases what it holds. Repeated until the destination
           holds nothing and its marker is gone. Each write is by job id or atomic on one
           Redis, so a rollback killed anywhere and run again does each job once."""
        dst, src = self.backend(dst_name), self.backend(src_name)
        staged = list(src.staged(tenant))
        for i in range(0, len(staged), 500):
            dst.take(keys.held(tenant), "hash", staged[i : i + 500])
            dst.take(keys.held_due(tenant), "hash", staged[i : i + 500])
        self._send(tenant, src, src, "rollback_written")
        n = 0
        for _ in range(1000):
            dst.stage_held(tenant, sorted(dst.held(tenant)))
            self._stage_all(tenant, dst)
            self._send(tenant, dst, src, "rollback_written")
            n += self._release_held(tenant, src)
            if dst.end_hold(tenant) == 0:
                break
        else:
            raise MoveError("jobs kept arriving in the destination's held set; run --rollback again")
        return n


def _score(v: Any) -> str:
    """A staged score as the due ms Redis gets back (a float's repr keeps its precision)."""
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


def moves_in_progress(zk: ZK) -> list[TenantEntry]:
    """Tenants with a move in progress, from the moves index (no scan of every tenant)."""
    return TopologyStore(zk).moving()
