"""`podjobs queues|workers|stats|dead|scheduled|retries|job`: the queues of every pod.

    podjobs queues | workers | stats
    podjobs queues pause NAME | resume NAME      (workers pass a paused queue over)
    podjobs dead list | retry ID... | retry --all | delete ID... | delete --all --yes
    podjobs scheduled list | run-now ID... | delete ID...
    podjobs retries list | retry-now ID... | delete ID...
    podjobs job show ID

Fleet-wide by default: every pod of the topology in ZooKeeper (`--zk`, else `$PODJOBS_ZK`,
else the topology file of `podjobs dev up`), with a pod column; `--pod NAME` narrows to one
pod, `--redis URL` (or `$PODJOBS_REDIS_URL`) reads one Redis (options.pod_targets). A pod
whose Redis does not answer is named on stderr, the others are shown, and the exit code is 4.
Listings of jobs take `--tenant` and `--job` filters. `--json` prints the nouns of
surface.schema: `queue`, `worker`, `stats`, `job` (lists) and `action` (what a retry or a
delete changed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from podjobs.errors import BackendUnavailable, ConfigurationError, JobNotFound
from podjobs.exits import Exit
from podjobs.table import ago, duration, one_line, paint, render

from .options import (
    Commands,
    action_result,
    add_target_args,
    add_watch,
    confirm_all,
    pod_targets,
    print_json,
    watching,
)
from .schema import iso

if TYPE_CHECKING:  # Redis loads in the commands, not for --help
    from podjobs.ops import FoundJob, Inspector, QueueStats, WorkerInfo

T = TypeVar("T")


def _inspector(url: str) -> Inspector:
    """The Inspector of a pod's queue: Redis, or a SqlInspector when `url` is a database URL
    (a pod on the SQL backend; the same methods)."""
    from podjobs.backend import RedisBackend
    from podjobs.ops import Inspector

    if url.split(":", 1)[0] not in ("redis", "rediss", "unix", "redis+sentinel"):
        from podjobs.sqlbackend import SqlBackend
        from podjobs.sqlbackend.ops import SqlInspector

        return SqlInspector(SqlBackend(url, migrate=False))  # type: ignore[return-value]
    return Inspector(RedisBackend(url, check=False))


def each_pod(args: argparse.Namespace, fn: Callable[[Inspector], T]) -> tuple[list[tuple[str | None, T]], int]:
    """`fn(inspector)` on every pod of the view; ([(pod, result)], exit code): a pod whose
    Redis does not answer is named on stderr and makes the exit code 4."""
    from podjobs.gateway import UNREACHABLE

    out: list[tuple[str | None, T]] = []
    code = 0
    for pod, url in pod_targets(args):
        try:
            out.append((pod, fn(_inspector(url))))
        except (BackendUnavailable, *UNREACHABLE) as exc:  # type: ignore[misc]
            print(f"podjobs: pod {pod or url}: Redis unreachable ({one_line(str(exc))}); "
                  f"left out", file=sys.stderr)
            code = int(Exit.UNREACHABLE)
    return out, code


# -- rows: the JSON nouns ---------------------------------------------------------------


def queue_row(pod: str | None, q: QueueStats) -> dict[str, Any]:
    return {"pod": pod, "queue": q.name, "size": q.size, "latency_s": q.latency_s,
            "scheduled": q.scheduled, "retrying": q.retrying, "in_flight": q.in_flight,
            "paused": q.paused}


def worker_row(pod: str | None, w: WorkerInfo) -> dict[str, Any]:
    return {"pod": w.pod or pod, "worker": w.id, "alive": w.alive, "host": w.host, "pid": w.pid,
            "queues": w.queues, "concurrency": w.concurrency, "isolation": w.isolation,
            "started_at": iso(w.started or None),
            "busy": [{"job_id": b.get("id"), "job": b.get("job"), "queue": b.get("queue"),
                      **{k: v for k, v in b.items() if k not in ("id", "job", "queue")}}
                     for b in w.busy]}


def _error(d: dict[str, Any]) -> dict[str, Any] | None:
    err = d.get("error")
    if isinstance(err, dict):
        return err
    if err:
        return {"class": "", "message": str(err)}
    return None


def job_row(pod: str | None, where: str, d: dict[str, Any], score_ms: int | None,
            worker: str | None = None) -> dict[str, Any]:
    """A job where it is (queue, scheduled, retry, in_flight, dead, finished), `at`: when it
    died, is due, or was queued."""
    return {"pod": pod, "job_id": d.get("id"), "job": d.get("job"), "queue": d.get("queue"),
            "where": where, "at": iso(score_ms or d.get("enqueued_at"), ms=True),
            "attempt": d.get("attempt", 0) if isinstance(d.get("attempt", 0), int) else None,
            "tenant": d.get("tenant"), "reason": d.get("dead_reason"), "error": _error(d),
            "worker": worker, "args": d.get("args") if isinstance(d.get("args"), list) else None,
            "kwargs": d.get("kwargs", {}) if isinstance(d.get("kwargs", {}), dict) else None,
            **({"raw": d["raw"]} if "raw" in d else {})}


def _call(row: dict[str, Any], width: int = 40) -> str:
    args = json.dumps(row.get("args") or [])[1:-1]
    kw = ", ".join(f"{k}={json.dumps(v)}" for k, v in (row.get("kwargs") or {}).items())
    inner = ", ".join(x for x in (args, kw) if x)
    if len(inner) > width:
        inner = inner[:width - 1] + "…"
    return f"{row.get('job') or '?'}({inner})"


def _error_text(err: dict[str, Any] | None, width: int = 80) -> str:
    if not err:
        return "-"
    msg = one_line(f"{err.get('class') or ''}: {err.get('message') or ''}".strip(": "))
    if len(msg) > width:
        cut = msg[:width].rsplit(" ", 1)[0]  # never mid-word
        msg = (cut if len(cut) > width // 2 else msg[:width]) + " …"
    return msg


# -- commands ---------------------------------------------------------------------------


def cmd_queues(args: argparse.Namespace) -> int:
    if args.action in ("pause", "resume"):
        return _pause(args)
    if args.name:
        raise ConfigurationError(f"'podjobs queues' lists every queue; did you mean "
                                 f"'podjobs queues pause {args.name}' or 'resume {args.name}'?")
    return watching(args, lambda: _queues(args))


def _queues(args: argparse.Namespace) -> int:
    got, code = each_pod(args, lambda ins: ins.queues())
    rows = [queue_row(pod, q) for pod, qs in got for q in qs]
    if args.json:
        print_json(rows)
    else:
        print(render(["pod", "queue", "size", "latency", "scheduled", "retrying", "in flight",
                      "state"],
                     [[r["pod"] or "-", r["queue"], r["size"], duration(r["latency_s"]),
                       r["scheduled"], r["retrying"], r["in_flight"],
                       paint("PAUSED", "yellow", sys.stdout) if r["paused"] else "running"]
                      for r in rows]))
    return code


def _pause(args: argparse.Namespace) -> int:
    """`queues pause|resume NAME`: on every pod of the view (or `--pod`)."""
    if not args.name:
        raise ConfigurationError(f"queues {args.action} needs the queue's NAME")
    pause = args.action == "pause"
    got, code = each_pod(args, lambda ins: ins.pause(args.name) if pause
                         else ins.resume(args.name))
    changed = [str(pod) for pod, did in got if did]
    where = ", ".join(str(p) for p, _ in got) or "no pod"
    if pause:
        msg = (f"queue {args.name} paused on {where}: workers take nothing from it, jobs still "
               f"arrive; 'podjobs queues resume {args.name}' to go on")
    else:
        msg = f"queue {args.name} running again on {where}"
    action_result(args, f"queues {args.action}", changed, msg, queue=args.name)
    return code


def cmd_workers(args: argparse.Namespace) -> int:
    return watching(args, lambda: _workers(args))


def _workers(args: argparse.Namespace) -> int:
    got, code = each_pod(args, lambda ins: ins.workers())
    rows = [worker_row(pod, w) for pod, ws in got for w in ws]
    if args.json:
        print_json(rows)
    else:
        print(render(["pod", "worker", "alive", "queues", "conc", "isolation", "busy", "running"],
                     [[r["pod"] or "-", r["worker"], "yes" if r["alive"] else "NO",
                       ",".join(r["queues"]), r["concurrency"], r["isolation"], len(r["busy"]),
                       ", ".join(f"{b['job']}:{str(b['job_id'])[-6:]}" for b in r["busy"][:3])]
                      for r in rows]))
    return code


def cmd_stats(args: argparse.Namespace) -> int:
    got, code = each_pod(args, lambda ins: ins.stats())
    rows = [{"pod": pod, "processed": s.get("processed", 0), "failed": s.get("failed", 0),
             "dead": s.get("dead", 0), "recovered": s.get("recovered", 0)} for pod, s in got]
    if args.json:
        print_json(rows)
    else:
        names = ["processed", "failed", "dead", "recovered"]
        print(render(["pod", *names], [[r["pod"] or "-", *(r[n] for n in names)] for r in rows]))
    return code


def _filtered(args: argparse.Namespace, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if (not args.tenant or r["tenant"] == args.tenant)
            and (not args.job or r["job"] == args.job)]


def _job_list(args: argparse.Namespace, where: str,
              read: Callable[[Inspector], list[tuple[dict[str, Any], int]]], when: str) -> int:
    got, code = each_pod(args, read)
    rows = _filtered(args, [job_row(pod, where, d, s) for pod, items in got for d, s in items])
    if args.json:
        print_json(rows)
        return code
    print(render(["pod", "id", "job", "queue", "attempt", when, "reason", "error"],
                 [[r["pod"] or "-", r["job_id"] or "-", _call(r), r["queue"] or "-",
                   r["attempt"] if r["attempt"] is not None else "-", ago(r["at"]),
                   r["reason"] or "-", _error_text(r["error"])] for r in rows]))
    return code


def cmd_dead(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _job_list(args, "dead", lambda ins: ins.dead(args.limit), "died")
    if not args.ids and not args.all:
        raise ConfigurationError(f"dead {args.action} needs job ids or --all")
    if args.ids and args.all:
        raise ConfigurationError(f"dead {args.action}: give job ids or --all, not both")
    if args.action == "delete" and args.all:
        confirm_all(args, "delete every dead job" + (f" of pod {args.pod}" if args.pod else
                                                      " on every pod"))
    retry = args.action == "retry"
    if args.all:
        got, code = each_pod(args, lambda ins: ins.dead_retry_all() if retry else ins.dead_clear())
        n = sum(c for _, c in got)
        changed = [str(p) for p, c in got if c]
    else:
        changed, code = _each_id(args, retry)
        n = len(changed)
    msg = f"{n} dead job(s) put back on their queues" if retry else f"{n} dead job(s) deleted"
    action_result(args, f"dead {args.action}", changed, msg)
    return code


def _each_id(args: argparse.Namespace, retry: bool) -> tuple[list[str], int]:
    """Retry or delete each id on whichever pod has it; `JobNotFound` naming the ids no pod
    has (after acting on the others)."""
    missing = set(args.ids)

    def act(ins: Inspector) -> list[str]:
        done = []
        for job_id in sorted(missing):
            try:
                ok = ins.dead_retry(job_id) if retry else ins.dead_delete(job_id)
            except JobNotFound:
                continue
            if ok:
                done.append(job_id)
        missing.difference_update(done)
        return done

    got, code = each_pod(args, act)
    if missing:
        raise JobNotFound(f"not in the dead set of any pod: {', '.join(sorted(missing))}; see "
                          f"'podjobs dead list'")
    return [i for _, ids in got for i in ids], code


def cmd_scheduled(args: argparse.Namespace) -> int:
    if args.action != "list":
        return _waiting_action(args, "scheduled", "scheduled")
    return _job_list(args, "scheduled", lambda ins: ins.scheduled(args.limit), "due")


def cmd_retries(args: argparse.Namespace) -> int:
    if args.action != "list":
        return _waiting_action(args, "retry", "retries")
    return _job_list(args, "retry", lambda ins: ins.retries(args.limit), "next try")


def _waiting_action(args: argparse.Namespace, kind: str, cmd: str) -> int:
    """`scheduled run-now|delete ID...`, `retries retry-now|delete ID...` on whichever pod
    has each job; `JobNotFound` naming the ids no pod has (after acting on the others)."""
    if not args.ids:
        raise ConfigurationError(f"{cmd} {args.action} needs job ids (see 'podjobs {cmd} list')")
    now = args.action != "delete"
    missing = set(args.ids)

    def act(ins: Inspector) -> list[str]:
        done = []
        for job_id in sorted(missing):
            try:
                ok = ins.run_now(kind, job_id) if now else ins.delete_waiting(kind, job_id)
            except JobNotFound:
                continue
            if ok:
                done.append(job_id)
        missing.difference_update(done)
        return done

    got, code = each_pod(args, act)
    if missing:
        what = "scheduled" if kind == "scheduled" else "waiting for a retry"
        raise JobNotFound(f"not {what} on any pod: {', '.join(sorted(missing))} (done, due "
                          f"meanwhile, or never there); see 'podjobs {cmd} list'")
    changed = [i for _, ids in got for i in ids]
    msg = (f"{len(changed)} job(s) moved to the front of their queue: they run next" if now
           else f"{len(changed)} job(s) deleted (tracked ones cancelled)")
    action_result(args, f"{cmd} {args.action}", changed, msg)
    return code


def _find(ins: Inspector, job_id: str) -> tuple[FoundJob | None, dict[str, str]]:
    from podjobs import keys
    from podjobs.gateway import text

    r = getattr(ins, "r", None)
    if r is not None:
        record = {text(k): text(v) for k, v in r.hgetall(keys.status(job_id)).items()}
    else:  # a SQL pod: its pj_status row (SqlInspector.status_record)
        record = ins.status_record(job_id) if hasattr(ins, "status_record") else {}
    try:
        return ins.find_job(job_id), record
    except JobNotFound:
        return None, record


def cmd_job_show(args: argparse.Namespace) -> int:
    got, code = each_pod(args, lambda ins: _find(ins, args.id))
    row = None
    for pod, (found, record) in got:
        if found is not None:
            row = job_row(pod, found.where, found.payload, found.score_ms, found.worker)
        elif record and record.get("state") and record.get("reason") != "moved":
            payload = json.loads(record["payload"]) if record.get("payload") else {}
            row = job_row(pod, "finished" if record["state"] in ("succeeded", "failed", "dead",
                                                                 "cancelled") else "unknown",
                          {"id": args.id, "job": record.get("job"), "queue": record.get("queue"),
                           "tenant": record.get("tenant") or None, **payload},
                          int(record.get("finished_ms") or 0) or None, record.get("worker"))
        if row is not None:
            row["status"] = record or None
            break
    if row is None:
        if code:
            return code
        raise JobNotFound(
            f"job {args.id!r} is not queued, scheduled, retrying, running or dead on "
            f"{'pod ' + args.pod if args.pod else 'any pod'}, and has no status record; it may "
            f"have finished (untracked jobs leave nothing once done)")
    if args.json:
        print_json(row)
        return code
    st = row["status"] or {}
    print(f"job {args.id} on pod {row['pod'] or '-'}: {row['where']}"
          + (f" ({st['state']})" if st.get("state") else "")
          + (f" on queue {row['queue']}" if row["queue"] else "")
          + (f", worker {row['worker']}" if row["worker"] else "")
          + (f", {ago(row['at'])}" if row["at"] else ""))
    print(f"  call:    {_call(row, 200)}")
    if row["tenant"]:
        print(f"  tenant:  {row['tenant']}")
    if row["reason"]:
        print(f"  reason:  {row['reason']}")
    err = row["error"] or (json.loads(st["error"]) if st.get("error") else None)
    if err:
        print(f"  error:   {err.get('class') or ''}: {one_line(err.get('message') or '')}")
        tb = err.get("traceback") or err.get("trace")
        if tb:
            print("  traceback:")
            for line in str(tb).rstrip().splitlines():
                print(f"    {line}")
    return code


def register(cmds: Commands) -> None:
    def listing(name: str, help_: str, func: Any, noun: str) -> argparse.ArgumentParser:
        p = cmds.command(name, help_, func, noun=noun)
        add_target_args(p)
        return p

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tenant", metavar="TENANT", help="only this tenant's jobs")
        p.add_argument("--job", metavar="NAME", help="only jobs of this name (e.g. app.resize)")
        p.add_argument("--limit", type=int, default=50, help="at most this many per pod (50)")

    p = listing("queues", "each queue on every pod: size, oldest job's latency, paused; or "
                          "'queues pause|resume NAME'", cmd_queues, "queue")
    p.add_argument("action", nargs="?", choices=["list", "pause", "resume"], default="list",
                   help="list (default); pause NAME: workers take nothing from it (jobs keep "
                        "arriving); resume NAME")
    p.add_argument("name", nargs="?", metavar="NAME", help="the queue to pause or resume")
    add_watch(p)
    add_watch(listing("workers", "live workers and what they run, on every pod", cmd_workers,
                      "worker"))
    listing("stats", "processed, failed, dead and recovered counters per pod", cmd_stats, "stats")

    p = listing("dead", "list, retry or delete dead jobs (every pod)", cmd_dead, "job")
    p.add_argument("action", choices=["list", "retry", "delete"])
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="every dead job (delete asks, or --yes)")
    p.add_argument("--yes", action="store_true", help="confirm 'delete --all' without asking")
    filters(p)

    p = listing("scheduled", "jobs scheduled for later (every pod); run-now or delete one",
                cmd_scheduled, "job")
    p.add_argument("action", choices=["list", "run-now", "delete"])
    p.add_argument("ids", nargs="*", metavar="ID")
    filters(p)

    p = listing("retries", "failed jobs waiting for their next attempt (every pod); retry-now "
                           "or delete one", cmd_retries, "job")
    p.add_argument("action", choices=["list", "retry-now", "delete"])
    p.add_argument("ids", nargs="*", metavar="ID")
    filters(p)

    p = listing("job", "show where one job is (any pod), its call, error and status record",
                cmd_job_show, "job")
    p.add_argument("action", choices=["show"])
    p.add_argument("id")
