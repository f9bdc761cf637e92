"""`SqlBackend`: the queue on the pod's own database (SQLite, MySQL/MariaDB, PostgreSQL),
behind the same `podjobs.backend.Backend` interface as Redis.

1. Every state change is one short transaction through SQLAlchemy Core (tables.py):
   enqueue inserts into pj_ready (now) or pj_due (later); reserve takes the oldest ready
   rows of each queue in priority order (the first queue first; later ones only fill what
   is left) with `SELECT ... FOR UPDATE SKIP LOCKED` on MySQL/MariaDB/PostgreSQL (SQLite:
   the whole transaction holds the write lock) and stamps them with the worker's id; ack
   deletes them; retry, re-enqueue, dead move them.
2. The worker's lease: pj_workers.expires_ms, renewed by each heartbeat. A worker whose
   lease has expired is reaped by any other worker (`recover`: its reserved rows go back,
   ahead of newer jobs since they keep their `seq`), exactly as the Redis heartbeat key
   does; reserve reads the worker's row under a share lock, so a reaped worker never takes
   a job, and a reaper never misses one being taken.
3. Wake-ups: on PostgreSQL an idle worker LISTENs and every write that makes jobs ready
   NOTIFYs (sent on commit); elsewhere it polls (an index-only look) with an adaptive delay,
   POLL_MIN_S doubling to POLL_MAX_S, and an enqueue in the same process wakes it at once.
4. Times are the database's clock for MySQL/MariaDB (the offset is read on connect), this
   machine's for SQLite.
5. Paused queues (pj_paused): reserve and the idle wait leave them alone. An enqueue writes
   its first job id into pj_requests (kept REQUEST_TTL_MS) in the same transaction; a
   commit whose reply was lost is sent once more, and finds its marker: nothing twice.
6. Tracked jobs' status records (pj_status, sqlbackend/status.py) are written in the
   transaction of the queue change they belong to: enqueue, start and success (ack),
   settlement, cancel, recover, dead retry; read by `status_record`.
7. Refused with `NotSupported`, naming the feature: tenant moves (hold). Database errors become
   `BackendUnavailable` naming the server (`BackendTimeout` after a lost commit reply).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from podjobs.errors import BackendTimeout, BackendUnavailable, NotSupported
from podjobs.ids import new_id
from podjobs.payload import inflight_field
from podjobs.quota import TenantQuota
from podjobs.settlement import Kind, Settlement
from podjobs.sqlbackend import schema
from podjobs.sqlbackend import status as records
from podjobs.sqlbackend.engine import listener, make_engine, shown
from podjobs.sqlbackend.tables import dead, due, paused, ready, requests, unique, workers
from podjobs.status import PENDING_TTL_S, StatusWrite

#: most jobs one reserve takes
MAX_RESERVE = 1000
#: how long an enqueue's request marker is kept (the Redis backend's pj:req:<id> TTL)
REQUEST_TTL_MS = 30_000
#: the idle poll's delays (seconds): doubling from the first to the second while idle
POLL_MIN_S = 0.002
POLL_MAX_S = 0.05
#: dead set bounds (as the Redis backend's)
DEAD_MAX_JOBS = 10_000
DEAD_MAX_AGE_MS = 180 * 24 * 3600 * 1000
#: transient conflicts (deadlock, lock wait timeout, SQLite busy) retried this many times
CONFLICT_TRIES = 5
_CONFLICT_CODES = (1213, 1205)  # MySQL/MariaDB: deadlock, lock wait timeout
_CONFLICT_STATES = ("40P01", "40001", "55P03")  # PostgreSQL: deadlock, serialization, lock


def _conflict(exc: DBAPIError) -> bool:
    """A transient conflict between transactions (the transaction was rolled back)."""
    orig = exc.orig
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) in _CONFLICT_STATES:
        return True
    return bool(orig.args) and orig.args[0] in _CONFLICT_CODES

#: reserve request ids remembered per backend object (see SqlBackend.reserve)
SENT_KEPT = 256
#: the PostgreSQL NOTIFY channel of jobs made ready (the payload: the queue)
CHANNEL = "podjobs_wake"

#: one condition per database URL: an enqueue wakes the idle workers of this process
_wakes: dict[str, threading.Condition] = {}
_wakes_lock = threading.Lock()


def _wake_for(url: str) -> threading.Condition:
    with _wakes_lock:
        return _wakes.setdefault(url, threading.Condition())


def refuse(feature: str, what_to_do: str = "") -> NotSupported:
    return NotSupported(
        f"{feature} is not supported on the SQL backend yet; "
        + (what_to_do or "run this pod on Redis (backend: redis) to use it"))


class SqlBackend:
    """The SQL implementation of `Backend` for one pod's database."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.shown = shown(url)
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        self._wake = _wake_for(url)
        self._offset_ms = 0
        self._swept_ms = 0
        self._pg = self.dialect == "postgresql"
        self._listener: Any = None
        #: the latest reserve request ids this object sent: only asking with one of them again
        #: (a lost reply) looks for that reservation's rows (a fresh id cannot have any)
        self._sent: dict[str, None] = {}
        self._sent_lock = threading.Lock()
        with self.errors("connect"):
            if migrate:
                schema.upgrade(self.engine)
            if self.dialect in ("mysql", "mariadb"):
                with self.engine.connect() as c:
                    db_ms = int(c.execute(text("SELECT UNIX_TIMESTAMP(NOW(3)) * 1000")).scalar() or 0)
                self._offset_ms = db_ms - time.time_ns() // 1_000_000

    # -- plumbing -------------------------------------------------------------------

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self._offset_ms

    @contextmanager
    def errors(self, what: str, sent: bool = False) -> Iterator[None]:
        """Database errors as `BackendUnavailable` naming the database and what to do."""
        try:
            yield
        except (NotSupported, BackendUnavailable):
            raise
        except SQLAlchemyError as exc:
            cls = BackendUnavailable
            if sent and isinstance(exc, DBAPIError) and exc.connection_invalidated:
                from podjobs.errors import BackendTimeout

                cls = BackendTimeout
            raise cls(f"could not {what} on the SQL backend at {self.shown}: "
                      f"{type(exc.orig if isinstance(exc, DBAPIError) else exc).__name__}: "
                      f"{str(exc).splitlines()[0]}; check that the database is up and reachable"
                      ) from exc

    @contextmanager
    def tx(self, what: str) -> Iterator[Connection]:
        """One transaction (BEGIN IMMEDIATE on SQLite)."""
        with self.errors(what, sent=True), self.engine.begin() as c:
            yield c

    def _retrying(self, what: str, fn: Any) -> Any:
        """Run fn(conn) in a transaction, again after a deadlock or lock timeout (each use is
        safe to repeat: a conflict rolled the first try back)."""
        for attempt in range(CONFLICT_TRIES):
            try:
                with self.engine.begin() as c:
                    return fn(c)
            except DBAPIError as exc:
                if _conflict(exc) and attempt < CONFLICT_TRIES - 1:
                    time.sleep(0.001 * 2**attempt)
                    continue
                with self.errors(what, sent=True):
                    raise
            except SQLAlchemyError:
                with self.errors(what, sent=True):
                    raise
        raise AssertionError("unreachable")

    def _tell(self, c: Connection, queues: Sequence[str]) -> None:
        """PostgreSQL: NOTIFY the listening workers (delivered when `c` commits)."""
        if self._pg:
            for q in set(queues):
                c.execute(text("SELECT pg_notify(:ch, :q)"), {"ch": CHANNEL, "q": q})

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # -- enqueue --------------------------------------------------------------------

    def enqueue(
        self,
        queue: str,
        payloads: Sequence[str],
        *,
        delay_ms: int | None = None,
        at_ms: int | None = None,
        unique: tuple[str, int, str] | None = None,
        status: StatusWrite | None = None,
        quota: TenantQuota | None = None,
        tenant: str | None = None,
    ) -> int:
        """Insert payloads into `queue` now, after `delay_ms`, or at `at_ms`; 0 when the
        unique key is held. Tenant quotas are refused (they live in a pod's Redis); `tenant`
        is not used (no fair share on SQL: one FIFO per queue)."""
        if quota is not None:
            raise NotSupported(
                f"tenant {quota.tenant!r} has a quota, and quotas are checked in a pod's Redis; "
                f"this pod's queue is on the SQL backend: clear the quota ('podjobs tenants quota "
                f"{quota.tenant} --clear') or move the tenant to a Redis pod")
        self._check(payloads, unique, status)
        if not payloads:
            return 0
        for attempt in (1, 2):
            try:
                with self.tx("enqueue") as c:
                    n = self._enqueue(c, queue, payloads, delay_ms, at_ms, unique, status)
                break
            except BackendTimeout:
                # the commit was sent and its reply lost: it may have committed. Sent once
                # more, the request marker (pj_requests) tells, and nothing is written twice
                if attempt == 2:
                    raise
        if n and delay_ms is None and at_ms is None:
            self._notify()
        return n

    def enqueue_with(self, connection: Connection, queue: str, payloads: Sequence[str], *,
                     delay_ms: int | None = None, at_ms: int | None = None,
                     unique: tuple[str, int, str] | None = None,
                     status: StatusWrite | None = None) -> int:
        """`enqueue` in the caller's own transaction on this database (`connection`, a
        SQLAlchemy Connection in a transaction): the jobs commit or roll back with the
        caller's data. Idle workers notice them by their poll."""
        self._check(payloads, unique, status)
        if not payloads:
            return 0
        with self.errors("enqueue in the caller's transaction", sent=True):
            return self._enqueue(connection, queue, payloads, delay_ms, at_ms, unique, status)

    def _check(self, payloads: Sequence[str], unique: tuple[str, int, str] | None,
               status: StatusWrite | None) -> None:
        if status is not None and len(payloads) != 1:
            raise ValueError("a tracked enqueue carries one job")
        if unique is not None and len(payloads) != 1:
            raise ValueError("a unique enqueue carries one job")

    def _enqueue(self, c: Connection, queue: str, payloads: Sequence[str], delay_ms: int | None,
                 at_ms: int | None, uniq: tuple[str, int, str] | None,
                 status: StatusWrite | None = None) -> int:
        now = self.now_ms()
        marker = inflight_field(payloads[0])
        marked = not marker.startswith("bad:")  # a payload podjobs wrote: it has its own id
        if marked and c.execute(select(requests.c.request)
                                .where(requests.c.request == marker)).first():
            return len(payloads)  # a re-sent enqueue whose first send committed
        if uniq is not None and not self._take_unique(c, uniq, now):
            return 0
        if marked:
            c.execute(insert(requests).values(request=marker, expires_ms=now + REQUEST_TTL_MS))
        if delay_ms is None and at_ms is None:
            when = now
            c.execute(insert(ready), [{"queue": queue, "job_id": inflight_field(p), "payload": p}
                                      for p in payloads])
            self._tell(c, [queue])
        else:
            when = now + delay_ms if delay_ms is not None else int(at_ms or 0)
            c.execute(insert(due), [{"queue": queue, "kind": "sched", "due_ms": when,
                                     "job_id": inflight_field(p), "payload": p} for p in payloads])
        if status is not None:  # queued (enqueue.lua): kept longer by how far off it is due
            records.write(c, records.job_id_of(status), now,
                          {"updated_ms": now, "enqueued_ms": now, "payload": payloads[0],
                           "run_at_ms": when}, status,
                          ttl_s=status.ttl_s + max(0, -(-(when - now) // 1000)), lock=False)
        return len(payloads)

    def _take_unique(self, c: Connection, uniq: tuple[str, int, str], now: int) -> bool:
        key, ttl_ms, owner = uniq
        held = c.execute(select(unique.c.expires_ms).where(unique.c.ukey == key)
                         .with_for_update()).first()
        if held is not None:
            if held[0] > now:
                return False
            c.execute(delete(unique).where(unique.c.ukey == key))
        try:
            with c.begin_nested():
                c.execute(insert(unique).values(ukey=key, owner=owner, expires_ms=now + ttl_ms))
        except IntegrityError:
            return False  # another enqueuer took it first
        return True

    # -- worker side ----------------------------------------------------------------

    def reserve(self, worker_id: str, queues: Sequence[str], n: int,
                request_id: str = "") -> list[tuple[str, bytes]] | None:
        """Up to n jobs in queue priority order; None when this worker was reaped. Asked
        again with the same `request_id` (a lost reply), it answers that reservation's jobs
        still in flight and takes no more."""
        req = request_id or new_id()
        want0 = min(n, MAX_RESERVE)
        with self._sent_lock:
            again_asked = req in self._sent
            self._sent[req] = None
            if len(self._sent) > SENT_KEPT:
                del self._sent[next(iter(self._sent))]

        def take(c: Connection) -> list[tuple[str, bytes]] | None:
            me = c.execute(select(workers.c.worker_id).where(workers.c.worker_id == worker_id)
                           .with_for_update(read=True)).first()
            if me is None:
                return None
            if again_asked:
                again = c.execute(select(ready.c.queue, ready.c.payload)
                                  .where(ready.c.worker == worker_id, ready.c.request == req)
                                  .order_by(ready.c.seq)).all()
                if again:
                    return [(q, p.encode()) for q, p in again]
            out: list[tuple[str, bytes]] = []
            want = want0
            stopped = {r[0] for r in c.execute(select(paused.c.queue))}
            for q in queues:
                if want <= 0:
                    break
                if q in stopped:
                    continue
                rows = c.execute(select(ready.c.seq, ready.c.payload)
                                 .where(ready.c.queue == q, ready.c.worker == "")
                                 .order_by(ready.c.seq).limit(want)
                                 .with_for_update(skip_locked=True)).all()
                if not rows:
                    continue
                c.execute(update(ready).where(ready.c.seq.in_([r[0] for r in rows]))
                          .values(worker=worker_id, request=req))
                out += [(q, r[1].encode()) for r in rows]
                want -= len(rows)
            return out

        got: list[tuple[str, bytes]] | None = self._retrying("reserve jobs", take)
        return got

    def ack(self, worker_id: str, acks: Mapping[str, Sequence[str]],
            starts: Sequence[tuple[str, str, bool, StatusWrite]] = (),
            tracked: Mapping[str, Sequence[tuple[str, bool, StatusWrite]]] | None = None) -> int:
        """Delete acked jobs of this worker (all queues, one transaction); the number acked.
        Tracked jobs (ack_status.lua): `starts` (queue, job id, in flight, running status) are
        marked running first, each only while the job is still this worker's (or, acked
        before it ran, while its record is waiting) and its record is not final; then the
        jobs of `tracked` (queue -> [(job id, in flight, succeeded status)]) are acked and
        marked succeeded."""
        ids = [j for js in acks.values() for j in js]
        done = [t for ts in (tracked or {}).values() for t in ts]
        if not ids and not starts and not done:
            return 0

        def go(c: Connection) -> int:
            now = self.now_ms()
            if starts:
                sids = [sid for _, sid, _, _ in starts]
                found = records.read_many(c, sids, now)
                mine = {r[0] for r in c.execute(select(ready.c.job_id).where(
                    ready.c.worker == worker_id, ready.c.job_id.in_(sids)))}
                writes = []
                for _q, sid, s_in_flight, st in starts:
                    state = found.get(sid, {}).get("state", "")
                    if (state not in records.FINAL and sid in mine) if s_in_flight \
                            else state in records.WAITING:
                        own: dict[str, object] = {"updated_ms": now}
                        if not found.get(sid, {}).get("started_ms"):
                            own["started_ms"] = now
                        writes.append((sid, own, st, ("payload", "run_at_ms")))
                records.write_many(c, now, found, writes)
            n = 0
            if ids:
                n = int(c.execute(delete(ready).where(ready.c.worker == worker_id,
                                                      ready.c.job_id.in_(ids))).rowcount)
            if done:
                dids = [jid for jid, _, _ in done]
                held = {r[0] for r in c.execute(select(ready.c.job_id).where(
                    ready.c.worker == worker_id, ready.c.job_id.in_(dids)).with_for_update())}
                if held:
                    c.execute(delete(ready).where(ready.c.worker == worker_id,
                                                  ready.c.job_id.in_(list(held))))
                ends = [(jid, {"updated_ms": now, "finished_ms": now}, st,
                         ("payload", "worker", "run_at_ms"))
                        for jid, in_flight, st in done if jid in held or not in_flight]
                n += len(ends)
                records.write_many(c, now, records.read_many(c, [e[0] for e in ends], now), ends)
            return n

        n: int = self._retrying("ack jobs", go)
        return n

    def settle(self, worker_id: str, queue: str, s: Settlement) -> bool:
        """End one delivery as `s` says, in one transaction; False when the job was no
        longer in flight (nothing changed)."""
        k = s.kind
        if k is Kind.NONE:
            raise ValueError(f"settlement {s!r} has nothing to send")

        def go(c: Connection) -> bool:
            gone = c.execute(delete(ready).where(ready.c.worker == worker_id,
                                                 ready.c.job_id == s.job_id)).rowcount
            if not gone and s.in_flight:
                return False
            now = self.now_ms()
            if k is Kind.ACK or k is Kind.FORWARD or k is Kind.HOLD:
                if s.children:
                    c.execute(insert(ready), [{"queue": cq, "job_id": inflight_field(p), "payload": p}
                                              for cq, p in s.children])
                    self._tell(c, [cq for cq, _ in s.children])
            elif k is Kind.RETRY:
                c.execute(insert(due).values(queue=queue, kind="retry", due_ms=now + max(0, s.delay_ms),
                                             job_id=s.job_id, payload=s.payload))
            elif k is Kind.REENQUEUE:
                if s.delay_ms > 0:
                    c.execute(insert(due).values(queue=queue, kind="sched", due_ms=now + s.delay_ms,
                                                 job_id=s.job_id, payload=s.payload))
                else:
                    c.execute(insert(ready).values(queue=queue, job_id=s.job_id, payload=s.payload))
                    self._tell(c, [queue])
            elif k is Kind.DEAD:
                c.execute(insert(dead).values(queue=queue, job_id=s.job_id, died_ms=now,
                                              payload=s.payload))
                self._trim_dead(c, now)
            if s.unique and (k is not Kind.RETRY and k is not Kind.REENQUEUE):
                c.execute(delete(unique).where(unique.c.ukey == s.unique, unique.c.owner == s.job_id))
            if s.status is not None:
                self._settled_status(c, s, now)
            return True

        ok: bool = self._retrying("settle a job", go)
        if ok and ((k is Kind.ACK and s.children) or (k is Kind.REENQUEUE and s.delay_ms <= 0)):
            self._notify()
        return ok

    @staticmethod
    def _settled_status(c: Connection, s: Settlement, now: int) -> None:
        """A settlement's status write, as its Lua script makes it (ack_one, retry,
        reenqueue, dead)."""
        st = s.status
        assert st is not None
        k = s.kind
        if k is Kind.RETRY or k is Kind.REENQUEUE:
            delay = max(0, s.delay_ms)
            records.write(c, s.job_id, now, {"updated_ms": now, "run_at_ms": now + delay,
                                             "payload": s.payload}, st, ("worker",),
                          ttl_s=st.ttl_s + -(-delay // 1000))
            return
        rec = None
        if st.if_worker:  # written only while the record says running on that worker
            rec = records.read(c, s.job_id, now, lock=True)
            if rec is None or rec.get("state") != "running" or rec.get("worker") != st.if_worker:
                return
        records.write(c, s.job_id, now, {"updated_ms": now, "finished_ms": now}, st,
                      ("payload", "worker", "run_at_ms"), current=rec)

    def _trim_dead(self, c: Connection, now: int) -> None:
        c.execute(delete(dead).where(dead.c.died_ms < now - DEAD_MAX_AGE_MS))
        over = c.execute(select(dead.c.seq).order_by(dead.c.seq.desc())
                         .offset(DEAD_MAX_JOBS).limit(1)).scalar()
        if over is not None:
            c.execute(delete(dead).where(dead.c.seq <= over))

    def recover(self, worker_id: str, queues: Sequence[str], force: bool = False) -> int:
        """Give a worker's reserved jobs back (-1 when its lease is current and not forced)
        and unregister it."""

        def go(c: Connection) -> int:
            row = c.execute(select(workers.c.expires_ms).where(workers.c.worker_id == worker_id)
                            .with_for_update()).first()
            if row is not None and not force and row[0] > self.now_ms():
                return -1
            c.execute(delete(workers).where(workers.c.worker_id == worker_id))
            self._recovered_status(c, worker_id)
            n = int(c.execute(update(ready).where(ready.c.worker == worker_id)
                              .values(worker="", request="")).rowcount)
            if n:
                self._tell(c, queues)
            return n

        n: int = self._retrying("recover in-flight jobs", go)
        if n > 0:
            self._notify()
        return n

    def _recovered_status(self, c: Connection, worker_id: str) -> None:
        """A gone worker's tracked jobs with a record say queued again (reason recovered),
        with their payload (recover.lua)."""
        mine = c.execute(select(ready.c.job_id, ready.c.payload)
                         .where(ready.c.worker == worker_id)).all()
        now = self.now_ms()
        for jid, p in mine:
            if '"track":' not in p:
                continue
            rec = records.read(c, jid, now, lock=True)
            if rec is not None:
                records.write(c, jid, now, {"state": "queued", "reason": "recovered", "payload": p,
                                            "run_at_ms": now, "updated_ms": now},
                              None, ("worker",), PENDING_TTL_S, current=rec)

    def cancel(self, job_id: str, queue: str, tenant: str | None, unique_key: str | None,
               ttl_s: int) -> tuple[str, str]:
        """Cancel a tracked job that has not started (as lua/cancel.lua): (outcome, state),
        outcome one of cancelled, already, unknown, stale (the record names another queue),
        refused (it runs, ran, or a worker has just taken it). `tenant` is not used (no
        held jobs on SQL)."""

        def go(c: Connection) -> tuple[str, str]:
            now = self.now_ms()
            rec = records.read(c, job_id, now, lock=True)
            if rec is None:
                return "unknown", ""
            st = rec.get("state", "")
            if st == "cancelled":
                return "already", st
            if st not in ("queued", "retrying"):
                return "refused", st
            if rec.get("queue") != queue:
                return "stale", st
            if not rec.get("payload"):
                return "refused", st
            n = c.execute(delete(ready).where(ready.c.worker == "", ready.c.job_id == job_id,
                                              ready.c.queue == queue)).rowcount
            if not n:
                n = c.execute(delete(due).where(due.c.job_id == job_id, due.c.queue == queue)).rowcount
            if not n:
                return "refused", st
            if unique_key:
                c.execute(delete(unique).where(unique.c.ukey == unique_key, unique.c.owner == job_id))
            records.write(c, job_id, now, {"state": "cancelled", "reason": "cancelled",
                                           "updated_ms": now, "finished_ms": now},
                          None, ("payload", "run_at_ms", "worker"), ttl_s, current=rec)
            return "cancelled", "cancelled"

        got: tuple[str, str] = self._retrying("cancel a job", go)
        return got

    def status_record(self, job_id: str) -> dict[str, str]:
        """A tracked job's status record ({} when there is none, or it expired)."""
        with self.errors("read a job's status"), \
                self.engine.connect().execution_options(pj_read=True) as c:
            rec = records.read(c, job_id, self.now_ms())
            c.rollback()
        return rec or {}

    def worker_alive(self, worker_id: str) -> bool:
        """The worker is registered and its lease is current (the Redis heartbeat key)."""
        with self.errors("read a worker's lease"), \
                self.engine.connect().execution_options(pj_read=True) as c:
            exp = c.execute(select(workers.c.expires_ms)
                            .where(workers.c.worker_id == worker_id)).scalar()
            c.rollback()
        return exp is not None and int(exp) > self.now_ms()

    def requeue(self, worker_id: str, queue: str, items: Sequence[tuple[str, str | bytes]]) -> int:
        """Reserved, unstarted jobs back to where they were in their queue."""
        if not items:
            return 0
        ids = [jid for jid, _ in items]

        def go(c: Connection) -> int:
            return int(c.execute(update(ready).where(ready.c.worker == worker_id, ready.c.job_id.in_(ids))
                                 .values(worker="", request="")).rowcount)

        n: int = self._retrying("give jobs back", go)
        return n

    def promote(self, queues: Sequence[str], limit: int = 1000) -> int:
        """Due scheduled jobs and retries of these queues onto their queues."""
        if not queues:
            return 0

        def go(c: Connection) -> int:
            rows = c.execute(select(due.c.seq, due.c.queue, due.c.job_id, due.c.payload)
                             .where(due.c.queue.in_(list(queues)), due.c.due_ms <= self.now_ms())
                             .order_by(due.c.due_ms, due.c.seq).limit(limit)
                             .with_for_update(skip_locked=True)).all()
            if not rows:
                return 0
            c.execute(insert(ready), [{"queue": q, "job_id": j, "payload": p} for _, q, j, p in rows])
            c.execute(delete(due).where(due.c.seq.in_([r[0] for r in rows])))
            self._tell(c, [r[1] for r in rows])
            return len(rows)

        n: int = self._retrying("promote due jobs", go)
        if n:
            self._notify()
        now = self.now_ms()
        if now - self._swept_ms >= REQUEST_TTL_MS // 10:  # expired request markers, now and then
            self._swept_ms = now
            self._retrying("drop expired request markers", lambda c: c.execute(
                delete(requests).where(requests.c.expires_ms < now)))
            self._retrying("drop expired status records", lambda c: records.prune(c, now))
        return n

    def heartbeat(self, worker_id: str, ttl_ms: int, first: bool, info: Mapping[str, str]) -> bool:
        """Renew the worker's lease; False when it had been reaped (its row is gone)."""
        import json

        queues = info.get("queues", "")
        blob = json.dumps(dict(info))

        def go(c: Connection) -> bool:
            exp = self.now_ms() + ttl_ms
            n = c.execute(update(workers).where(workers.c.worker_id == worker_id)
                          .values(expires_ms=exp, queues=queues, info=blob)).rowcount
            if n:
                return True
            if not first:
                return False
            c.execute(insert(workers).values(worker_id=worker_id, expires_ms=exp, queues=queues,
                                             info=blob))
            return True

        ok: bool = self._retrying("send a heartbeat", go)
        return ok

    def dead_worker_ids(self) -> list[tuple[str, list[str]]]:
        """Registered workers whose lease has expired, with their queues."""
        with self.errors("list workers"), self.engine.connect() as c:
            rows = c.execute(select(workers.c.worker_id, workers.c.queues)
                             .where(workers.c.expires_ms < self.now_ms())).all()
            c.rollback()
        return [(w, [q for q in qs.split(",") if q]) for w, qs in rows]

    def reserve_after_wait(self, worker_id: str, queues: Sequence[str], n: int, request_id: str,
                           timeout_s: float) -> list[tuple[str, bytes]] | None:
        """An idle worker's wait for work (`wait_for_work`), then `reserve`: two steps here
        (the database has no blocking pop to send the reservation behind)."""
        self.wait_for_work(queues, timeout_s)
        return self.reserve(worker_id, queues, n, request_id)

    def wait_for_work(self, queues: Sequence[str], timeout_s: float) -> bool:
        """Poll for a ready job of these queues, POLL_MIN_S doubling to POLL_MAX_S, until
        the timeout; an enqueue in this process wakes the wait at once."""
        deadline = time.monotonic() + timeout_s
        delay = POLL_MIN_S
        if self._pg:
            return self._wait_pg(queues, deadline)
        while True:
            if self._has_work(queues):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._wake:
                if self._wake.wait(min(delay, left)):
                    delay = POLL_MIN_S
                else:
                    delay = min(POLL_MAX_S, delay * 2)

    def _has_work(self, queues: Sequence[str]) -> bool:
        look = (select(ready.c.seq).where(ready.c.queue.in_(list(queues)), ready.c.worker == "",
                                          ready.c.queue.not_in(select(paused.c.queue)))
                .limit(1))
        with self.errors("wait for jobs"), self.engine.connect().execution_options(pj_read=True) as c:
            found = c.execute(look).first() is not None
            c.rollback()
        return found

    def _wait_pg(self, queues: Sequence[str], deadline: float) -> bool:
        """LISTEN first, then look, then wait for a NOTIFY (none is missed in between)."""
        try:
            if self._listener is None:
                self._listener = listener(self.url, CHANNEL)
            while True:
                if self._has_work(queues):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                for _ in self._listener.notifies(timeout=left, stop_after=1):
                    pass
        except (BackendUnavailable, NotSupported):
            raise
        except Exception as exc:  # psycopg errors: drop the listener, LISTEN again next time
            if self._listener is not None:
                try:
                    self._listener.close()
                finally:
                    self._listener = None
            raise BackendUnavailable(f"could not wait for jobs on the SQL backend at {self.shown}: "
                                     f"{type(exc).__name__}: {exc}") from exc

    # -- paused queues ------------------------------------------------------------------

    def pause(self, queue: str) -> bool:
        """Workers stop taking jobs from `queue` (jobs keep arriving); False if it was
        paused already."""
        def go(c: Connection) -> bool:
            if c.execute(select(paused.c.queue).where(paused.c.queue == queue)).first():
                return False
            c.execute(insert(paused).values(queue=queue))
            return True

        done: bool = self._retrying(f"pause queue {queue!r}", go)
        return done

    def resume(self, queue: str) -> bool:
        """Workers take jobs from `queue` again; False if it was not paused."""
        done: bool = self._retrying(f"resume queue {queue!r}", lambda c: bool(
            c.execute(delete(paused).where(paused.c.queue == queue)).rowcount))
        if done:
            self._notify()
        return done

    def paused(self) -> list[str]:
        with self.errors("read paused queues"), \
                self.engine.connect().execution_options(pj_read=True) as c:
            rows = c.execute(select(paused.c.queue).order_by(paused.c.queue)).all()
            c.rollback()
        return [r[0] for r in rows]

    def hold(self, tenant: str, queue: str, items: Sequence[tuple[str, str]],
             status: StatusWrite | None = None) -> bool:
        raise refuse(f"a tenant move (holding tenant {tenant!r}'s jobs)",
                     "move tenants between pods that run on Redis")

    def release_connection(self) -> None:
        """Nothing kept per thread: each call checks a connection out of the engine's pool."""

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.engine.dispose()

    # -- reads (tests, bench, `queues` views) ----------------------------------------

    def counts(self, queue: str | None = None) -> dict[str, int]:
        """ready / reserved / scheduled / retry / dead / unique row counts (ready, reserved,
        scheduled and retry of `queue` only when given)."""
        rq = [ready.c.queue == queue] if queue is not None else []
        dq = [due.c.queue == queue] if queue is not None else []
        with self.errors("count jobs"), self.engine.connect().execution_options(pj_read=True) as c:
            free = c.execute(select(func.count()).where(ready.c.worker == "", *rq)).scalar()
            held = c.execute(select(func.count()).where(ready.c.worker != "", *rq)).scalar()
            d: dict[str, int] = {str(k): int(v) for k, v in c.execute(
                select(due.c.kind, func.count()).where(*dq).group_by(due.c.kind)).all()}
            out = {"ready": int(free or 0), "reserved": int(held or 0),
                   "scheduled": int(d.get("sched", 0)), "retry": int(d.get("retry", 0)),
                   "dead": int(c.execute(select(func.count()).select_from(dead)).scalar() or 0),
                   "unique": int(c.execute(select(func.count()).select_from(unique)).scalar() or 0)}
            c.rollback()
        return out

    def dead_payloads(self) -> list[str]:
        with self.errors("read the dead set"), self.engine.connect().execution_options(pj_read=True) as c:
            rows = c.execute(select(dead.c.payload).order_by(dead.c.seq)).all()
            c.rollback()
        return [r[0] for r in rows]

    def due_rows(self) -> list[tuple[str, str, int, str]]:
        """(queue, kind, due ms, payload) of the scheduled jobs and retries, soonest first."""
        with self.errors("read scheduled jobs"), self.engine.connect().execution_options(pj_read=True) as c:
            rows = c.execute(select(due.c.queue, due.c.kind, due.c.due_ms, due.c.payload)
                             .order_by(due.c.due_ms)).all()
            c.rollback()
        return [(q, k, int(ms), p) for q, k, ms, p in rows]
