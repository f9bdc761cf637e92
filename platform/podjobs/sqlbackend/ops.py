"""`SqlInspector`: what `podjobs queues`, `workers`, `stats`, `dead`, `scheduled` and `retry`
read and change on a pod whose queue is on the SQL backend (podjobs.ops.Inspector is the
Redis one; the same methods and return types).

1. Reads: `queues()` (ready rows per queue, the oldest one's age, scheduled, retrying,
   reserved), `workers()` (pj_workers rows; alive = lease not expired), `stats()` (the SQL
   backend keeps no counters: only "dead" is there, counted), `dead()`, `scheduled()`,
   `retries()`, `listing(kind)`, `find_job(id)`.
2. Changes, each one transaction: `dead_retry(id)` / `dead_retry_all()` (back on its queue
   with a fresh attempt count), `dead_delete(id)`, `dead_clear()`, `run_now(kind, id)`,
   `delete_waiting(kind, id)`, `pause(queue)` / `resume(queue)` (SqlBackend.pause/resume).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from podjobs.errors import JobNotFound
from podjobs.ops import SETS, FoundJob, QueueStats, WorkerInfo
from podjobs.payload import encode
from podjobs.sqlbackend import status as records
from podjobs.sqlbackend.backend import SqlBackend
from podjobs.sqlbackend.tables import dead, due, ready, workers

#: `listing` kind -> pj_due.kind
_DUE_KIND = {"scheduled": "sched", "retries": "retry"}


def _decode(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {"raw": raw[:200]}
    return data if isinstance(data, dict) else {"raw": raw[:200]}


class SqlInspector:
    """The Inspector of one SQL pod (see the module docstring)."""

    def __init__(self, backend: SqlBackend) -> None:
        self.backend = backend
        self.engine = backend.engine

    def _read(self, what: str, fn: Any) -> Any:
        with self.backend.errors(what), self.engine.connect().execution_options(pj_read=True) as c:
            out = fn(c)
            c.rollback()
        return out

    # -- reads ------------------------------------------------------------------------

    def queue_names(self) -> list[str]:
        def go(c: Connection) -> list[str]:
            names = {r[0] for r in c.execute(select(ready.c.queue).distinct())}
            names |= {r[0] for r in c.execute(select(due.c.queue).distinct())}
            return sorted(names | set(self.backend.paused()))

        names: list[str] = self._read("list queues", go)
        return names

    def queues(self) -> list[QueueStats]:
        def go(c: Connection) -> list[Any]:
            free: dict[str, int] = dict(c.execute(select(ready.c.queue, func.count()).where(ready.c.worker == "")
                                  .group_by(ready.c.queue)).all())
            held: dict[str, int] = dict(c.execute(select(ready.c.queue, func.count()).where(ready.c.worker != "")
                                  .group_by(ready.c.queue)).all())
            waits: dict[tuple[str, str], int] = {
                (q, k): n for q, k, n in c.execute(
                    select(due.c.queue, due.c.kind, func.count()).group_by(due.c.queue, due.c.kind))}
            oldest = dict(c.execute(select(ready.c.queue, func.min(ready.c.seq))
                                    .where(ready.c.worker == "").group_by(ready.c.queue)).all())
            heads: dict[str, str] = {}
            if oldest:
                heads = dict(c.execute(select(ready.c.queue, ready.c.payload)
                                       .where(ready.c.seq.in_(list(oldest.values())))).all())
            return [free, held, waits, heads]

        free, held, waits, heads = self._read("read the queues", go)
        paused = set(self.backend.paused())
        now = self.backend.now_ms()
        out = []
        for q in sorted(set(free) | set(held) | {q for q, _ in waits} | paused):
            latency = 0.0
            enq = _decode(heads[q]).get("enqueued_at") if q in heads else None
            if isinstance(enq, int):
                latency = max(0.0, (now - enq) / 1000)
            out.append(QueueStats(q, int(free.get(q, 0)), round(latency, 3),
                                  int(waits.get((q, "sched"), 0)), int(waits.get((q, "retry"), 0)),
                                  int(held.get(q, 0)), q in paused))
        return out

    def workers(self) -> list[WorkerInfo]:
        rows = self._read("list workers", lambda c: c.execute(
            select(workers.c.worker_id, workers.c.expires_ms, workers.c.info)
            .order_by(workers.c.worker_id)).all())
        now = self.backend.now_ms()
        out = []
        for wid, exp, blob in rows:
            info = _decode(blob)
            out.append(WorkerInfo(
                wid, int(exp) >= now, str(info.get("host", "?")), int(info.get("pid", 0) or 0),
                str(info.get("pod", "")), [q for q in str(info.get("queues", "")).split(",") if q],
                int(info.get("concurrency", 0) or 0), str(info.get("isolation", "")),
                float(info.get("started", 0) or 0), json.loads(str(info.get("busy", "[]")) or "[]")))
        return out

    def stats(self) -> dict[str, int]:
        """The SQL backend keeps no processed/failed/recovered counters (-1: not kept)."""
        n = self._read("count the dead set",
                       lambda c: c.execute(select(func.count()).select_from(dead)).scalar())
        return {"processed": -1, "failed": -1, "dead": int(n or 0), "recovered": -1}

    def dead(self, limit: int = 50) -> list[tuple[dict[str, Any], int]]:
        rows = self._read("read the dead set", lambda c: c.execute(
            select(dead.c.payload, dead.c.died_ms).order_by(dead.c.died_ms.desc(), dead.c.seq.desc())
            .limit(limit)).all())
        return [(_decode(p), int(ms)) for p, ms in rows]

    def _due(self, kind: str, limit: int) -> list[tuple[dict[str, Any], int]]:
        rows = self._read("read scheduled jobs", lambda c: c.execute(
            select(due.c.payload, due.c.due_ms).where(due.c.kind == kind)
            .order_by(due.c.due_ms, due.c.seq).limit(limit)).all())
        return [(_decode(p), int(ms)) for p, ms in rows]

    def scheduled(self, limit: int = 50) -> list[tuple[dict[str, Any], int]]:
        return self._due("sched", limit)

    def retries(self, limit: int = 50) -> list[tuple[dict[str, Any], int]]:
        return self._due("retry", limit)

    def listing(self, kind: str, limit: int = 50) -> list[tuple[dict[str, Any], int]]:
        if kind == "dead":
            return self.dead(limit)
        if kind not in SETS:
            raise JobNotFound(f"no set {kind!r} (sets: {', '.join(SETS)})")
        return self._due(_DUE_KIND[kind], limit)

    def find_job(self, job_id: str) -> FoundJob:
        def go(c: Connection) -> FoundJob | None:
            row = c.execute(select(ready.c.queue, ready.c.payload, ready.c.worker)
                            .where(ready.c.job_id == job_id)).first()
            if row is not None:
                where = "in_flight" if row[2] else "queue"
                return FoundJob(where, row[0], _decode(row[1]), None, row[2] or None)
            drow = c.execute(select(due.c.queue, due.c.payload, due.c.due_ms, due.c.kind)
                             .where(due.c.job_id == job_id)).first()
            if drow is not None:
                where = "retry" if drow[3] == "retry" else "scheduled"
                return FoundJob(where, drow[0], _decode(drow[1]), int(drow[2]))
            row = c.execute(select(dead.c.queue, dead.c.payload, dead.c.died_ms)
                            .where(dead.c.job_id == job_id)).first()
            if row is not None:
                return FoundJob("dead", row[0], _decode(row[1]), int(row[2]))
            return None

        found: FoundJob | None = self._read(f"find job {job_id!r}", go)
        if found is None:
            raise JobNotFound(f"job {job_id!r} is not queued, scheduled, retrying, running or "
                              f"dead on this pod")
        return found

    # -- changes ----------------------------------------------------------------------

    def pause(self, queue: str) -> bool:
        return self.backend.pause(queue)

    def resume(self, queue: str) -> bool:
        return self.backend.resume(queue)

    def _requeue(self, c: Connection, raw: str) -> str:
        data = _decode(raw)
        if not data.get("job"):
            raise JobNotFound("this dead entry was an undecodable payload; it cannot be retried, "
                              "only deleted")
        for k in ("error", "dead_reason", "died_at", "failed_at", "failure"):
            data.pop(k, None)
        data["attempt"] = 0
        data["enqueued_at"] = self.backend.now_ms()
        q = str(data.get("queue", "default"))
        payload = encode(data, 1 << 30)
        c.execute(insert(ready).values(queue=q, job_id=str(data.get("id", "")), payload=payload))
        if "track" in data and isinstance(data.get("id"), str):  # its record: queued again
            from podjobs import status

            now = self.backend.now_ms()
            records.write(c, data["id"], now, {"updated_ms": now, "run_at_ms": now,
                                               "payload": payload}, status.revived(data))
        return q

    @staticmethod
    def _dead_row(c: Connection, job_id: str) -> tuple[int, str]:
        """(seq, payload) of a dead job by id: its job_id column, else the id its payload
        shows (a malformed payload died under the id it was given then)."""
        row = c.execute(select(dead.c.seq, dead.c.payload).where(dead.c.job_id == job_id)
                        .limit(1)).first()
        if row is None:
            for seq, raw in c.execute(select(dead.c.seq, dead.c.payload)):
                if _decode(raw).get("id") == job_id:
                    return int(seq), str(raw)
            raise JobNotFound(f"job {job_id!r} is not in the dead set; see 'podjobs dead list'")
        return int(row[0]), str(row[1])

    def dead_retry(self, job_id: str) -> bool:
        """Put a dead job back on its queue with a fresh attempt count."""
        def go(c: Connection) -> bool:
            row = self._dead_row(c, job_id)
            self._requeue(c, row[1])
            return bool(c.execute(delete(dead).where(dead.c.seq == row[0])).rowcount)

        ok: bool = self.backend._retrying("retry a dead job", go)
        self.backend._notify()
        return ok

    def dead_retry_all(self) -> int:
        def go(c: Connection) -> int:
            n = 0
            for seq, raw in c.execute(select(dead.c.seq, dead.c.payload).order_by(dead.c.seq)).all():
                if _decode(raw).get("job"):
                    self._requeue(c, raw)
                    n += c.execute(delete(dead).where(dead.c.seq == seq)).rowcount
            return n

        n: int = self.backend._retrying("retry the dead set", go)
        self.backend._notify()
        return n

    def dead_delete(self, job_id: str) -> bool:
        def go(c: Connection) -> int:
            seq, _ = self._dead_row(c, job_id)
            return int(c.execute(delete(dead).where(dead.c.seq == seq)).rowcount)

        return bool(self.backend._retrying("delete a dead job", go))

    def dead_clear(self) -> int:
        n: int = self.backend._retrying("clear the dead set",
                                        lambda c: int(c.execute(delete(dead)).rowcount))
        return n

    def _waiting(self, c: Connection, kind: str, job_id: str) -> tuple[int, str, str]:
        if kind not in _DUE_KIND:
            raise JobNotFound(f"no set {kind!r} (sets: scheduled, retries)")
        row = c.execute(select(due.c.seq, due.c.queue, due.c.payload)
                        .where(due.c.job_id == job_id, due.c.kind == _DUE_KIND[kind])).first()
        if row is None:
            raise JobNotFound(f"job {job_id!r} is not in {kind}")
        return int(row[0]), str(row[1]), str(row[2])

    def run_now(self, kind: str, job_id: str) -> bool:
        def go(c: Connection) -> bool:
            seq, q, raw = self._waiting(c, kind, job_id)
            c.execute(insert(ready).values(queue=q, job_id=job_id, payload=raw))
            return bool(c.execute(delete(due).where(due.c.seq == seq)).rowcount)

        ok: bool = self.backend._retrying("run a job now", go)
        self.backend._notify()
        return ok

    def delete_waiting(self, kind: str, job_id: str) -> bool:
        """Drop a scheduled or retrying job; a tracked one is cancelled (SqlBackend.cancel),
        so its status record says cancelled."""
        def go(c: Connection) -> tuple[bool, str, dict[str, Any]]:
            seq, q, raw = self._waiting(c, kind, job_id)
            data = _decode(raw)
            if "track" in data:
                return False, q, data
            return bool(c.execute(delete(due).where(due.c.seq == seq)).rowcount), q, data

        ok, q, data = self.backend._retrying("delete a waiting job", go)
        if "track" in data:
            from podjobs import status

            unique = data.get("unique")
            outcome, _ = self.backend.cancel(job_id, q, data.get("tenant") or None,
                                             unique if isinstance(unique, str) else None,
                                             status.finished_ttl(data))
            return outcome in ("cancelled", "already")
        return bool(ok)

    def status_record(self, job_id: str) -> dict[str, str]:
        """A tracked job's status record ({} when none): what `podjobs job show` adds."""
        return self.backend.status_record(job_id)
