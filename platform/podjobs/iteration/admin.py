"""What operators see and do with iteration jobs on one pod (the CLI's backend).

1. `jobs(state, limit)`: the newest iteration jobs with their progress (ids whose hash
   has expired are dropped from the index on the way).
2. `show(id)`: one job's `Progress`, or a parallel group's `GroupProgress`.
3. `pause`, `resume`, `cancel`: one Lua script each (iter_pause/resume/cancel.lua); on a
   group id, applied to every part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from podjobs import keys as core_keys
from podjobs.backend import RedisBackend
from podjobs.errors import JobNotFound
from podjobs.gateway import text
from podjobs.iteration import iterkeys
from podjobs.iteration.parallel import group_state
from podjobs.iteration.state import Progress, State
from podjobs.iteration.store import FINISHED_TTL_S, lua_for
from podjobs.status import PENDING_TTL_S


@dataclass
class GroupProgress:
    """A parallel iteration: its parts and their sum."""

    id: str
    job: str
    state: State
    parts: list[Progress]
    done: int
    total: int | None
    #: items per second over the wall time since the first part started
    rate: float | None
    eta_s: float | None
    callback_fired: bool

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "job": self.job, "state": self.state.value, "done": self.done,
                "total": self.total, "rate": self.rate, "eta_s": self.eta_s,
                "callback_fired": self.callback_fired, "parts": [p.as_dict() for p in self.parts]}


def _strs(h: dict[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in h.items()}


class Iterations:
    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self.r = backend.redis
        self.lua = lua_for(backend)

    def _now_ms(self) -> int:
        sec, usec = self.r.time()
        return int(sec) * 1000 + int(usec) // 1000

    # -- reading ---------------------------------------------------------------------

    def get(self, job_id: str) -> Progress | None:
        with self.backend.errors("read an iteration"):
            h = _strs(self.r.hgetall(iterkeys.job(job_id)))
        return Progress.from_hash(job_id, h, self._now_ms()) if h else None

    def jobs(self, state: str | None = None, limit: int = 50) -> list[Progress]:
        """Newest first; `state` filters."""
        out: list[Progress] = []
        now = self._now_ms()
        start, chunk = 0, max(limit, 100)
        with self.backend.errors("list iterations"):
            while len(out) < limit:
                raw_ids: Any = self.r.zrevrange(iterkeys.INDEX, start, start + chunk - 1)
                ids = [text(x) for x in raw_ids]
                if not ids:
                    break
                pipe = self.r.pipeline(transaction=False)
                for jid in ids:
                    pipe.hgetall(iterkeys.job(jid))
                gone = []
                for jid, raw in zip(ids, pipe.execute(), strict=True):
                    h = _strs(raw)
                    if not h:
                        gone.append(jid)
                        continue
                    p = Progress.from_hash(jid, h, now)
                    if state is None or p.state.value == state:
                        out.append(p)
                if gone:
                    self.backend.take(iterkeys.INDEX, "zset", gone, "prune the iteration index")
                start += chunk - len(gone)
        return out[:limit]

    def group(self, group_id: str) -> GroupProgress | None:
        with self.backend.errors("read a parallel iteration"):
            g = _strs(self.r.hgetall(iterkeys.group(group_id)))
            if not g:
                return None
            ids = [i for i in g.get("ids", "").split(",") if i]
            pipe = self.r.pipeline(transaction=False)
            for jid in ids:
                pipe.hgetall(iterkeys.job(jid))
            raws = pipe.execute()
        now = self._now_ms()
        parts = [Progress.from_hash(jid, _strs(raw), now) if raw else
                 Progress.from_hash(jid, {"state": "succeeded", "job": g.get("job", "")}, now)
                 for jid, raw in zip(ids, raws, strict=True)]
        done = sum(p.done for p in parts)
        totals = [p.total for p in parts]
        total = sum(t for t in totals if t is not None) if all(t is not None for t in totals) else None
        starts = [p.started_ms for p in parts if p.started_ms]
        ends = [p.finished_ms or p.updated_ms or now for p in parts if p.started_ms]
        state = group_state([p.state for p in parts])
        last = max(ends) if state in (State.SUCCEEDED, State.CANCELLED) and ends else now
        wall = (last - min(starts)) / 1000 if starts else 0.0
        rate = done / wall if wall > 0 else None
        eta = max(0.0, (total - done) / rate) if rate and total is not None else None
        return GroupProgress(group_id, g.get("job", ""), state, parts, done, total, rate, eta,
                             bool(g.get("fired_ms")))

    def show(self, job_or_group_id: str) -> Progress | GroupProgress:
        p = self.get(job_or_group_id)
        if p is not None:
            return p
        g = self.group(job_or_group_id)
        if g is not None:
            return g
        raise JobNotFound(
            f"no iteration job or parallel group {job_or_group_id!r} on this pod; finished ones "
            f"are kept {FINISHED_TTL_S // 86400} days. See 'podjobs iterations list'")

    # -- control ---------------------------------------------------------------------

    def _ids(self, job_or_group_id: str) -> list[str]:
        with self.backend.errors("read an iteration"):
            if self.r.exists(iterkeys.job(job_or_group_id)):
                return [job_or_group_id]
            ids = self.r.hget(iterkeys.group(job_or_group_id), "ids")
        if ids:
            return [i for i in text(ids).split(",") if i]
        raise JobNotFound(
            f"no iteration job or parallel group {job_or_group_id!r} on this pod; "
            f"see 'podjobs iterations list'")

    def pause(self, job_or_group_id: str) -> dict[str, str]:
        """Pause (at the next item boundary when running); job id -> state afterwards."""
        return {jid: text(self.lua.run("iter_pause", "pause an iteration", [iterkeys.job(jid)], []))
                for jid in self._ids(job_or_group_id)}

    def resume(self, job_or_group_id: str) -> dict[str, str]:
        out = {}
        for jid in self._ids(job_or_group_id):
            with self.backend.errors("read an iteration"):
                q = text(self.r.hget(iterkeys.job(jid), "queue") or b"default")
            out[jid] = text(self.lua.run(
                "iter_resume", "resume an iteration",
                [iterkeys.job(jid), core_keys.queue(q), core_keys.wake(q), core_keys.QUEUES,
                 core_keys.status(jid)], [q, PENDING_TTL_S]))
        return out

    def cancel(self, job_or_group_id: str) -> dict[str, str]:
        return {jid: text(self.lua.run("iter_cancel", "cancel an iteration", [iterkeys.job(jid)],
                                       [FINISHED_TTL_S]))
                for jid in self._ids(job_or_group_id)}
