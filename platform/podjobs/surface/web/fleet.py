"""Every read and action of the dashboard, across pods: the API's `Service` (its
short-timeout pod readers, the directory, `find`), `ops.Inspector`, `iteration.admin`,
`scheduler.report` / `control`, the periodic state nodes and the tenant directory. No
Redis key or ZooKeeper path is built here.

1. `overview()`: per pod: state, reachable, queues, live workers, counters (processed,
   failed, dead) for the graphs.
2. `pod(name)`: one pod's queues and workers; `busy()`: every running job, where, how long.
3. `listing(kind, pod, search)`: retries, scheduled or dead across pods (search in id, job,
   tenant, error); `act(kind, action, pod, id)`: run now, delete, delete all.
4. `job(principal, id)`: a job by id across pods: its status record (tracked jobs, what a
   tenant may see) and where it sits now (operator).
5. `iterations()` / `iteration_action`; `migrations()` / `migration_action`; `tenants()`;
   `periodic()`.
A pod whose Redis cannot be read shows as unreachable; nothing else fails with it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from podjobs.errors import BackendUnavailable, ConfigurationError, JobNotFound, PodjobsError
from podjobs.gateway import RedisError
from podjobs.ops import SETS, Inspector
from podjobs.surface.api.auth import Principal
from podjobs.surface.api.service import ApiError, Service

log = logging.getLogger("podjobs.web")

UNREACHABLE = (BackendUnavailable, RedisError, ConfigurationError)
SET_ACTIONS = ("run", "delete", "delete_all")
ITERATION_ACTIONS = ("pause", "resume", "cancel")
MIGRATION_ACTIONS = ("retry", "cancel")


@dataclass
class PodRows:
    """Rows read from every pod, and the pods that could not be read."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)


def _matches(row: dict[str, Any], needle: str) -> bool:
    if not needle:
        return True
    hay = " ".join(str(row.get(k, "")) for k in ("id", "job", "tenant", "queue", "error_text",
                                                 "dead_reason", "args_text")).lower()
    return needle.lower() in hay


def _error_text(p: dict[str, Any]) -> str:
    e = p.get("error")
    if isinstance(e, dict):
        return f"{e.get('class', '')}: {e.get('message', '')}"
    return str(e or "")


class Fleet:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.directory = service.directory

    def pod_names(self) -> list[str]:
        return sorted(self.directory.pods())

    def _each_pod(self, fn: Any) -> PodRows:
        out = PodRows()
        for pod, got in self.service._each(fn, self.pod_names()):
            if isinstance(got, UNREACHABLE):
                out.unreachable[pod] = str(got)[:200]
            elif isinstance(got, Exception):
                raise got
            else:
                out.rows.extend(got)
        return out

    def _inspector(self, pod: str) -> Inspector:
        if pod not in self.directory.pods():
            raise ApiError(404, f"no pod {pod!r} (pods: {', '.join(self.pod_names())})")
        return Inspector(self.service.reader(pod))

    # -- overview, one pod, busy ----------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        pods = self.directory.pods()

        def one(name: str) -> list[dict[str, Any]]:
            ins = Inspector(self.service.reader(name))
            qs = [q.__dict__ for q in ins.queues()]
            live = [w for w in ins.workers() if w.alive]
            return [{"name": name, "queues": qs, "stats": ins.stats(),
                     "workers": len(live), "busy": sum(len(w.busy) for w in live),
                     "size": sum(q["size"] for q in qs),
                     "latency_s": max((q["latency_s"] for q in qs), default=0.0),
                     "scheduled": sum(q["scheduled"] for q in qs),
                     "retrying": sum(q["retrying"] for q in qs)}]

        got = self._each_pod(one)
        by_name = {r["name"]: r for r in got.rows}
        rows = []
        for name in sorted(pods):
            row = by_name.get(name) or {"name": name, "queues": [], "stats": {}, "workers": 0,
                                        "busy": 0, "size": 0, "latency_s": 0.0, "scheduled": 0,
                                        "retrying": 0}
            row["state"] = str(pods[name].state.value)
            row["reachable"] = name not in got.unreachable
            row["error"] = got.unreachable.get(name)
            rows.append(row)
        return {"pods": rows, "at": time.time(),
                "zookeeper": "disconnected" if self.directory.stale else "connected"}

    def pod(self, name: str) -> dict[str, Any]:
        ins = self._inspector(name)
        try:
            return {"name": name, "state": str(self.directory.pod(name).state.value),
                    "queues": [q.__dict__ for q in ins.queues()], "stats": ins.stats(),
                    "workers": [w.__dict__ for w in ins.workers()], "error": None}
        except UNREACHABLE as exc:
            return {"name": name, "state": "?", "queues": [], "stats": {}, "workers": [],
                    "error": f"Redis unreachable: {str(exc)[:200]}"}

    def queue_action(self, action: str, pod: str, queue: str) -> str:
        """Pause or resume one queue of a pod (podjobs.ops: workers stop taking from a paused
        queue; jobs keep arriving)."""
        if action not in ("pause", "resume"):
            raise ApiError(400, f"unknown action {action!r}: pause or resume")
        if not queue:
            raise ApiError(400, "which queue?")
        ins = self._inspector(pod)
        changed = ins.pause(queue) if action == "pause" else ins.resume(queue)
        done = "paused" if action == "pause" else "resumed"
        return (f"queue {queue} on {pod} {done}" if changed
                else f"queue {queue} on {pod} was {done} already")

    def busy(self) -> PodRows:
        def one(name: str) -> list[dict[str, Any]]:
            return [{**b, "pod": name, "worker": w.id, "host": w.host, "pid": w.pid}
                    for w in Inspector(self.service.reader(name)).workers() if w.alive
                    for b in w.busy]

        got = self._each_pod(one)
        got.rows.sort(key=lambda r: -float(r.get("running_s") or 0))
        return got

    # -- retries, scheduled, dead ------------------------------------------------------------

    def listing(self, kind: str, pod: str | None = None, search: str = "",
                limit: int = 100) -> PodRows:
        if kind not in SETS:
            raise ApiError(404, f"no set {kind!r} (sets: {', '.join(SETS)})")

        def one(name: str) -> list[dict[str, Any]]:
            rows = []
            for p, score in Inspector(self.service.reader(name)).listing(kind, limit):
                row = {"pod": name, "id": p.get("id", ""), "job": p.get("job", ""),
                       "queue": p.get("queue", ""), "tenant": p.get("tenant") or "",
                       "attempt": p.get("attempt", 0), "at_ms": score,
                       "error_text": _error_text(p), "dead_reason": p.get("dead_reason", ""),
                       "args_text": repr(p.get("args", []))[:200]}
                if _matches(row, search):
                    rows.append(row)
            return rows

        if pod:
            self._inspector(pod)
            got = PodRows()
            for name, res in self.service._each(one, [pod]):
                if isinstance(res, UNREACHABLE):
                    got.unreachable[name] = str(res)[:200]
                elif isinstance(res, Exception):
                    raise res
                else:
                    got.rows = res
        else:
            got = self._each_pod(one)
        got.rows.sort(key=lambda r: -int(r["at_ms"]) if kind == "dead" else int(r["at_ms"]))
        return got

    def act(self, kind: str, action: str, pod: str, job_id: str = "") -> str:
        """Run now / delete / delete all; a sentence saying what happened."""
        if kind not in SETS or action not in SET_ACTIONS:
            raise ApiError(400, f"unknown action {action!r} on {kind!r}")
        ins = self._inspector(pod)
        try:
            if action == "delete_all":
                n = ins.remove_all(kind)
                return f"deleted {n} job(s) from the {kind} set of {pod}"
            if action == "run":
                moved = ins.run_now(kind, job_id)
                return (f"job {job_id} is on its queue on {pod}" if moved
                        else f"job {job_id} had already left the {kind} set")
            gone = ins.remove(kind, job_id)
            return f"deleted job {job_id} from {pod}" if gone else f"job {job_id} was already gone"
        except JobNotFound as exc:
            raise ApiError(404, str(exc)) from None
        except UNREACHABLE as exc:
            raise ApiError(503, f"pod {pod}'s Redis is unreachable: {exc}") from None

    # -- one job ---------------------------------------------------------------------------------

    def job(self, principal: Principal, job_id: str) -> dict[str, Any]:
        """{"record": the status view or None, "places": where it sits per pod (operators)}."""
        job_id = job_id.strip()
        out: dict[str, Any] = {"id": job_id, "record": None, "places": [], "errors": []}
        try:
            out["record"] = self.service.find(principal, job_id).view(job_id)
        except ApiError as exc:
            if exc.status_code != 404:
                out["errors"].append(exc.detail)
        if not principal.operator:
            return out

        def one(name: str) -> list[dict[str, Any]]:
            try:
                f = Inspector(self.service.reader(name)).find_job(job_id)
            except JobNotFound:
                return []
            return [{"pod": name, **f.as_dict()}]

        got = self._each_pod(one)
        out["places"] = got.rows
        out["errors"] += [f"pod {p} unreadable: {e}" for p, e in got.unreachable.items()]
        return out

    # -- iterations ------------------------------------------------------------------------------

    def iterations(self, state: str | None = None) -> PodRows:
        from podjobs.iteration.admin import Iterations

        def one(name: str) -> list[dict[str, Any]]:
            return [{**p.as_dict(), "pod": name}
                    for p in Iterations(self.service.reader(name)).jobs(state or None, 100)]

        return self._each_pod(one)

    def iteration_action(self, action: str, pod: str, job_id: str) -> str:
        from podjobs.iteration.admin import Iterations

        if action not in ITERATION_ACTIONS:
            raise ApiError(400, f"unknown action {action!r}")
        self._inspector(pod)
        try:
            res = getattr(Iterations(self.service.reader(pod)), action)(job_id)
        except JobNotFound as exc:
            raise ApiError(404, str(exc)) from None
        return f"{action}: " + ", ".join(f"{k} {v}" for k, v in res.items())

    # -- migrations, tenants, periodic ---------------------------------------------------------------

    def migrations(self) -> dict[str, Any]:
        status = self.service.migrations()
        shards = status["shards"]
        revisions = list(status["order"])
        for s in shards:
            for r in s["runs"]:
                if r not in revisions:
                    revisions.append(r)
        grid = []
        for s in shards:
            cur = s["current"]
            done_upto = revisions.index(cur) if cur in revisions else -1
            cells = []
            for i, rev in enumerate(revisions):
                run = s["runs"].get(rev) or {}
                state = run.get("state") or ("applied" if i <= done_upto else "pending")
                running = next((x for x in s["running"] if x["revision"] == rev), None)
                cells.append({"revision": rev, "state": state, "error": run.get("error"),
                              "progress": (running or {}).get("progress")})
            grid.append({"pod": s["pod"], "pod_state": s["pod_state"], "current": cur,
                         "read_error": s["read_error"], "cells": cells})
        return {"leader": status["leader"], "head": status["head"], "halts": status["halts"],
                "revisions": revisions, "grid": grid}

    def migration_action(self, action: str, revision: str, pod: str | None) -> str:
        from podjobs.scheduler import control

        if action not in MIGRATION_ACTIONS:
            raise ApiError(400, f"unknown action {action!r}")
        try:
            if action == "retry":
                cleared = control.retry(self.directory.zk, revision, pod or None)
                return f"retry {revision}: cleared on {', '.join(cleared) or 'no pod'}"
            res = control.cancel(self.directory.zk, revision, pod or None)
            return f"cancel {revision}: " + ", ".join(f"{k} {v}" for k, v in res.items())
        except PodjobsError as exc:
            raise ApiError(409, str(exc)) from None

    def tenants(self) -> list[dict[str, Any]]:
        return [{"tenant": e.tenant, "pod": e.pod, "state": e.state.value, "move": e.move}
                for _, e in sorted(self.directory.tenants().items())]

    def periodic(self) -> list[dict[str, Any]]:
        """Each periodic job this server knows (its --app): schedule, last and next tick per
        target, from the leader's state nodes."""
        from podjobs.cron import next_tick, registered
        from podjobs.scheduler.periodic import ONE_TARGET, state_path

        zk = self.directory.zk
        now = time.time()
        rows = []
        for name, spec in sorted(registered().items()):
            targets = self.pod_names() if spec.per_pod else [ONE_TARGET]
            for t in targets:
                try:
                    got = zk.get_json(state_path(zk, name, t))
                except Exception as exc:  # ZooKeeper away: show it, go on
                    log.warning("periodic state of %s unreadable: %r", name, exc)
                    got = None
                st = got[0] if got else {}
                last = st.get("last_tick")
                rows.append({"job": name, "cron": spec.cron, "per_pod": spec.per_pod,
                             "catch_up": spec.catch_up,
                             "target": st.get("pod", "") if t == ONE_TARGET else t,
                             "last_tick": last, "next_tick": next_tick(spec.cron, now)})
        return rows
