"""What operators see and do on one pod's queue: the read side of the CLI.

1. `queues()`: size, oldest-job latency, scheduled, retrying and in-flight counts, paused;
   `pause(queue)` / `resume(queue)`: workers pass a paused queue over (reserve.lua).
2. `workers()`: live workers, their queues and the jobs they run.
3. Dead set: list, retry (back to the queue with attempts reset), delete.
4. Scheduled and retry sets: list; `run_now` (runs next) and `delete_waiting` one job.
5. `find_job(id)`: where a job is (queue, scheduled, retry, in flight, dead).
6. `run_now(kind, id)` / `remove(kind, id)`: a job of the dead, retry or scheduled sets to
   its queue now, or out of its set (the dashboard's actions; `SETS` names the kinds).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.errors import JobNotFound
from podjobs.fairshare import ready_depths, ready_lists
from podjobs.gateway import text
from podjobs.ids import ID_LENGTH

#: the sorted sets an operator lists and acts on (`Inspector.run_now`, `remove`)
SETS = ("retries", "scheduled", "dead")


@dataclass
class QueueStats:
    name: str
    size: int
    latency_s: float
    scheduled: int
    retrying: int
    in_flight: int
    #: workers take nothing from it (`podjobs queues pause`); jobs still arrive
    paused: bool = False


@dataclass
class WorkerInfo:
    id: str
    alive: bool
    host: str
    pid: int
    pod: str
    queues: list[str]
    concurrency: int
    isolation: str
    started: float
    busy: list[dict[str, Any]]


@dataclass
class FoundJob:
    where: str  # queue | scheduled | retry | in_flight | dead
    queue: str
    payload: dict[str, Any]
    score_ms: int | None = None
    worker: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _id_of(member: bytes) -> str:
    return member[7 : 7 + ID_LENGTH].decode("ascii", "replace")


def _decode(member: bytes | str) -> dict[str, Any]:
    try:
        d = json.loads(member)
        return d if isinstance(d, dict) else {"raw": _raw(member)}
    except ValueError:
        return {"raw": _raw(member)}


def _raw(member: bytes | str) -> str:
    return member.decode("utf-8", "replace") if isinstance(member, bytes) else member


class Inspector:
    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self.r = backend.redis

    def queue_names(self) -> list[str]:
        return sorted(text(m) for m in self.r.smembers(keys.QUEUES))

    def _inflight_keys(self) -> list[tuple[str, str, str]]:
        """(key, worker id, queue) for every in-flight hash."""
        out = []
        prefix = keys.inflight("", "")[:-1]  # "pj:inflight:"
        for k in self.r.scan_iter(match=prefix + "*", count=1000):
            rest = text(k)[len(prefix):]
            wid, _, q = rest.rpartition(":")
            out.append((text(k), wid, q))
        return out

    def queues(self) -> list[QueueStats]:
        names = self.queue_names()
        pipe = self.r.pipeline(transaction=False)
        for q in names:
            pipe.zcard(keys.scheduled(q))
            pipe.zcard(keys.retry(q))
        res = pipe.execute()
        ready = ready_depths(self.r, names)
        inflight: dict[str, int] = {}
        ik = self._inflight_keys()
        if ik:
            pipe = self.r.pipeline(transaction=False)
            for k, _, _ in ik:
                pipe.hlen(k)
            for (_, _, q), n in zip(ik, pipe.execute(), strict=True):
                inflight[q] = inflight.get(q, 0) + int(n)
        now_ms = self._redis_ms()
        paused = {text(m) for m in self.r.smembers(keys.PAUSED)}
        out = []
        for i, q in enumerate(names):
            sched, retry = res[2 * i : 2 * i + 2]
            size, tails = ready[i]
            latency = 0.0
            for oldest in tails:  # the oldest job of each ready list (fair share)
                enq = _decode(oldest).get("enqueued_at")
                if isinstance(enq, int):
                    latency = max(latency, (now_ms - enq) / 1000)
            out.append(QueueStats(q, int(size), round(latency, 3), int(sched), int(retry),
                                  inflight.get(q, 0), keys.queue(q) in paused))
        return out

    # -- pausing a queue --------------------------------------------------------------

    def pause(self, queue: str) -> bool:
        """Workers stop taking jobs from `queue` (jobs keep arriving); False if it was
        paused already."""
        return bool(self.backend.run("queue_pause", f"pause queue {queue!r}",
                                      [keys.PAUSED, keys.queue(queue)], []))

    def resume(self, queue: str) -> bool:
        """Workers take jobs from `queue` again; False if it was not paused."""
        return bool(self.backend.run("queue_resume", f"resume queue {queue!r}",
                                      [keys.PAUSED, keys.queue(queue), keys.wake(queue),
                                       keys.ring(queue)], []))

    def _redis_ms(self) -> int:
        sec, usec = self.r.time()
        return int(sec) * 1000 + int(usec) // 1000

    def workers(self) -> list[WorkerInfo]:
        ids = sorted(text(m) for m in self.r.smembers(keys.WORKERS))
        pipe = self.r.pipeline(transaction=False)
        for wid in ids:
            pipe.hgetall(keys.worker_info(wid))
            pipe.exists(keys.heartbeat(wid))
        res = pipe.execute()
        out = []
        for i, wid in enumerate(ids):
            info = {text(k): text(v) for k, v in res[2 * i].items()}
            out.append(WorkerInfo(
                wid, bool(res[2 * i + 1]), info.get("host", "?"), int(info.get("pid", 0) or 0),
                info.get("pod", ""), [q for q in info.get("queues", "").split(",") if q],
                int(info.get("concurrency", 0) or 0), info.get("isolation", ""),
                float(info.get("started", 0) or 0), json.loads(info.get("busy", "[]") or "[]")))
        return out

    def stats(self) -> dict[str, int]:
        names = ("processed", "failed", "dead", "recovered")
        vals = self.r.mget([keys.stat(n) for n in names])
        return {n: int(v or 0) for n, v in zip(names, vals, strict=True)}

    # -- sorted sets (dead, scheduled, retry) ---------------------------------------

    def _zlist(self, key: str, limit: int, newest_first: bool) -> list[tuple[dict[str, Any], int]]:
        rows: Any = (self.r.zrevrange if newest_first else self.r.zrange)(key, 0, limit - 1, withscores=True)
        return [(_decode(m), int(s)) for m, s in rows]

    def dead(self, limit: int = 50) -> list[tuple[dict[str, Any], int]]:
        return self._zlist(keys.DEAD, limit, True)

    def scheduled(self, limit: int = 50) -> list[tuple[dict[str, Any], int]]:
        return self._merged([keys.scheduled(q) for q in self.queue_names()], limit)

    def retries(self, limit: int = 50) -> list[tuple[dict[str, Any], int]]:
        return self._merged([keys.retry(q) for q in self.queue_names()], limit)

    def _merged(self, zkeys: list[str], limit: int) -> list[tuple[dict[str, Any], int]]:
        rows: list[tuple[dict[str, Any], int]] = []
        for k in zkeys:
            rows += self._zlist(k, limit, False)
        rows.sort(key=lambda r: r[1])
        return rows[:limit]

    def _zfind(self, key: str, job_id: str) -> tuple[bytes, int] | None:
        needle = f'{{"id":"{job_id}"'.encode()
        for member, score in self.r.zscan_iter(key, count=1000):
            if member.startswith(needle):
                return member, int(score)
        return None

    def dead_retry(self, job_id: str) -> bool:
        """Put a dead job back on its queue with a fresh attempt count."""
        found = self._zfind(keys.DEAD, job_id)
        if found is None:
            raise JobNotFound(f"job {job_id!r} is not in the dead set; see 'podjobs dead list'")
        member, _ = found
        return self._requeue_member(keys.DEAD, member)

    def _requeue_member(self, zkey: str, member: bytes, reset: bool = True) -> bool:
        from podjobs.payload import encode

        data = _decode(member)
        if "job" not in data or not data.get("job"):
            raise JobNotFound("this dead entry was an undecodable payload; it cannot be retried, only deleted")
        for k in ("error", "dead_reason", "died_at", "failed_at", "failure"):
            data.pop(k, None)
        if reset:
            data["attempt"] = 0
        data["enqueued_at"] = self._redis_ms()
        q = str(data.get("queue", "default"))
        ks = [zkey, keys.queue(q), keys.wake(q), keys.QUEUES]
        args: list[Any] = [member, encode(data, 1 << 30), q]
        if "track" in data and isinstance(data.get("id"), str):
            from podjobs import status

            st = status.revived(data)  # a tracked job's record says queued again
            ks.append(st.key)
            args += (st.fields, st.ttl_s)
        res = self.backend.run("dead_retry", "retry a dead job", ks, args)
        return bool(res)

    def dead_retry_all(self) -> int:
        n = 0
        for member, _ in list(self.r.zscan_iter(keys.DEAD, count=1000)):
            if _decode(member).get("job"):
                n += self._requeue_member(keys.DEAD, member)
        return n

    def dead_delete(self, job_id: str) -> bool:
        found = self._zfind(keys.DEAD, job_id)
        if found is None:
            raise JobNotFound(f"job {job_id!r} is not in the dead set; see 'podjobs dead list'")
        return bool(self.backend.take(keys.DEAD, "zset", [found[0]], "delete a dead job"))

    def dead_clear(self) -> int:
        return int(self.backend.run("dead_clear", "clear the dead set", [keys.DEAD], []))

    # -- the dead, retry and scheduled sets by kind (the dashboard) --------------------

    def set_keys(self, kind: str) -> list[str]:
        """The sorted sets of `kind` (one of `SETS`)."""
        if kind == "dead":
            return [keys.DEAD]
        if kind not in SETS:
            raise JobNotFound(f"no set {kind!r} (sets: {', '.join(SETS)})")
        of = keys.retry if kind == "retries" else keys.scheduled
        return [of(q) for q in self.queue_names()]

    def listing(self, kind: str, limit: int = 50) -> list[tuple[dict[str, Any], int]]:
        return {"dead": self.dead, "retries": self.retries, "scheduled": self.scheduled}[kind](limit)

    def _find_in(self, kind: str, job_id: str) -> tuple[str, bytes]:
        for zk in self.set_keys(kind):
            hit = self._zfind(zk, job_id)
            if hit:
                return zk, hit[0]
        raise JobNotFound(f"job {job_id!r} is not in the {kind} set (it may have run already)")

    def remove(self, kind: str, job_id: str) -> bool:
        """Delete one job of a set. A tracked retrying or scheduled job is cancelled
        (lua/cancel.lua: its status record says cancelled, its unique key is released)."""
        zk, member = self._find_in(kind, job_id)
        data = _decode(member)
        if kind != "dead" and "track" in data:
            from podjobs import status

            unique = data.get("unique") if isinstance(data.get("unique"), str) else None
            outcome, _ = self.backend.cancel(job_id, str(data.get("queue", "default")),
                                             data.get("tenant") or None, unique,
                                             status.finished_ttl(data))
            if outcome in ("cancelled", "already"):
                return outcome == "cancelled"
        return bool(self.backend.take(zk, "zset", [member], f"delete a job of the {kind} set"))

    def remove_all(self, kind: str) -> int:
        # dead_clear.lua empties any one sorted set (ZCARD, DEL) and says how many it held
        return sum(int(self.backend.run("dead_clear", f"clear the {kind} set", [zk], []))
                   for zk in self.set_keys(kind))

    # -- a scheduled or retrying job: now, or never ---------------------------------

    def _waiting(self, kind: str, job_id: str) -> tuple[str, str, bytes]:
        """(queue, sorted set key, member) of a "scheduled" or "retry" job on this pod."""
        for q in self.queue_names():
            zkey = keys.scheduled(q) if kind == "scheduled" else keys.retry(q)
            hit = self._zfind(zkey, job_id)
            if hit:
                return q, zkey, hit[0]
        what, cmd = (("scheduled", "scheduled") if kind == "scheduled"
                     else ("waiting for a retry", "retries"))
        raise JobNotFound(f"job {job_id!r} is not {what} on this pod; see 'podjobs {cmd} list'")

    def run_now(self, kind: str, job_id: str) -> bool:
        """Run a job of a set next: a dead job back on its queue with a fresh attempt count;
        a scheduled ("scheduled") or retrying ("retry" or "retries") one moved to the taking
        end of its queue, keeping its count (zset_now.lua); False if it came due meanwhile."""
        if kind == "dead":
            zk, member = self._find_in(kind, job_id)
            return self._requeue_member(zk, member, reset=True)
        q, zkey, member = self._waiting("scheduled" if kind == "scheduled" else "retry", job_id)
        return bool(self.backend.run("zset_now", f"run job {job_id} now",
                                      [zkey, keys.queue(q), keys.wake(q)], [member]))

    def delete_waiting(self, kind: str, job_id: str) -> bool:
        """Drop a scheduled or retrying job; a tracked one is cancelled (cancel.lua), so its
        status record says cancelled."""
        q, zkey, member = self._waiting(kind, job_id)
        data = _decode(member)
        if "track" in data:
            from podjobs import status

            unique = data.get("unique")
            outcome, _ = self.backend.cancel(job_id, q, data.get("tenant") or None,
                                             unique if isinstance(unique, str) else None,
                                             status.finished_ttl(data))
            return outcome in ("cancelled", "already")
        return bool(self.backend.run("zset_delete", f"delete job {job_id}",
                                         [zkey, keys.PENDING, keys.PENDING_COUNT], [member]))

    # -- finding one job ------------------------------------------------------------

    def find_job(self, job_id: str) -> FoundJob:
        """Where job `job_id` is on this pod. The places are read one after another, so a
        job moving between two of them (reserved from the queue just after the in-flight
        hashes were read, say) can be missed by one pass: a miss is looked for once more
        before `JobNotFound` (a job does not move twice within one pass)."""
        for _ in range(2):
            found = self._look(job_id)
            if found is not None:
                return found
        raise JobNotFound(
            f"job {job_id!r} is not queued, scheduled, retrying, running or dead on this pod; "
            f"it may have finished (finished jobs are not kept) or live on another pod")

    def _look(self, job_id: str) -> FoundJob | None:
        for k, wid, q in self._inflight_keys():
            raw: Any = self.r.hget(k, job_id)
            if raw:
                return FoundJob("in_flight", q, _decode(raw), worker=wid)
        for q in self.queue_names():
            for kind, zk in (("scheduled", keys.scheduled(q)), ("retry", keys.retry(q))):
                hit = self._zfind(zk, job_id)
                if hit:
                    return FoundJob(kind, q, _decode(hit[0]), hit[1])
            for key in ready_lists(self.r, q):
                for raw in self._scan_list(key):
                    if _id_of(raw) == job_id:
                        return FoundJob("queue", q, _decode(raw))
        hit = self._zfind(keys.DEAD, job_id)
        if hit:
            data = _decode(hit[0])
            return FoundJob("dead", str(data.get("queue", "")), data, hit[1])
        return None

    def _scan_list(self, key: str, chunk: int = 1000) -> Iterator[bytes]:
        start = 0
        while True:
            rows: Any = self.r.lrange(key, start, start + chunk - 1)
            yield from rows
            if len(rows) < chunk:
                return
            start += chunk


def age(ms: int | None) -> str:
    if not ms:
        return "-"
    s = time.time() - ms / 1000
    return f"{s:.0f}s ago" if s >= 0 else f"in {-s:.0f}s"
