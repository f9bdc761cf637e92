"""Operator commands on one pod's queue, and `podjobs worker`.

    podjobs worker --app MODULE --queues critical,default,low --concurrency N
    podjobs queues | workers | stats
    podjobs dead list | retry ID... | retry --all | delete ID... | delete --all
    podjobs scheduled list
    podjobs retries list
    podjobs job show ID

Which Redis: `--redis URL`, or `--pod NAME` with the topology file written by
`podjobs dev up` (`--topology`, default `$PODJOBS_TOPOLOGY` or var/topology.json),
or `$PODJOBS_REDIS_URL`. Every listing takes `--json`.

`--pod NAME` needs the topology in ZooKeeper, which the core does not know: the command
line (podjobs.cli.build_parser) hands in, with `use_pods`, how to find a pod's Redis
(podjobs.pods.cli.pod_redis_url) and how to run a pod's worker
(podjobs.scheduler.cli.run_pod_worker: with the scheduler's migration job).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from podjobs.errors import ConfigurationError
from podjobs.table import render

if TYPE_CHECKING:  # Redis and the worker load in the commands, not for --help
    from podjobs.ops import Inspector
    from podjobs.worker import WorkerConfig

#: (args) -> the Redis URL of pod `args.pod` (`use_pods`)
_pod_redis: Callable[[argparse.Namespace], str] | None = None
#: (zk flag, pod, config) -> runs that pod's worker until it stops (`use_pods`)
_run_pod_worker: Callable[[str | None, str, WorkerConfig], None] | None = None


def use_pods(pod_redis: Callable[[argparse.Namespace], str],
             run_pod_worker: Callable[[str | None, str, WorkerConfig], None]) -> None:
    """Give `--pod NAME` its meaning (installed by the `podjobs` command line)."""
    global _pod_redis, _run_pod_worker
    _pod_redis, _run_pod_worker = pod_redis, run_pod_worker


def _no_pods() -> ConfigurationError:
    return ConfigurationError("--pod needs podjobs.pods (run through the podjobs command line) "
                              "or pass --redis URL")


def add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis", metavar="URL", help="the pod's Redis URL (default $PODJOBS_REDIS_URL)")
    p.add_argument("--pod", metavar="NAME", help="a pod of the topology in ZooKeeper instead of --redis")
    p.add_argument("--zk", metavar="HOSTS[/ROOT]",
                   help="ZooKeeper for --pod (default $PODJOBS_ZK, else the topology file's)")


def resolve_redis(args: argparse.Namespace) -> tuple[str, str | None]:
    """(redis url, pod name) from --redis, --pod + the topology in ZooKeeper, or the environment."""
    if getattr(args, "redis", None):
        return args.redis, getattr(args, "pod", None)
    if getattr(args, "pod", None):
        if _pod_redis is None:
            raise _no_pods()
        return _pod_redis(args), args.pod
    url = os.environ.get("PODJOBS_REDIS_URL")
    if url:
        return url, None
    raise ConfigurationError("which Redis? pass --redis URL or --pod NAME, or set PODJOBS_REDIS_URL")


def _inspector(args: argparse.Namespace) -> Inspector:
    from podjobs.backend import RedisBackend
    from podjobs.ops import Inspector

    url, _ = resolve_redis(args)
    return Inspector(RedisBackend(url, check=False))


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _summary(d: dict[str, Any]) -> str:
    args = json.dumps(d.get("args", []))[:40]
    return f"{d.get('job')}({args[1:-1]})"


# -- commands ---------------------------------------------------------------------------


def cmd_queues(args: argparse.Namespace) -> int:
    rows = _inspector(args).queues()
    if args.json:
        _print_json([r.__dict__ for r in rows])
    else:
        print(render(["queue", "size", "latency_s", "scheduled", "retrying", "in_flight"],
                     [[r.name, r.size, r.latency_s, r.scheduled, r.retrying, r.in_flight] for r in rows]))
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    rows = _inspector(args).workers()
    if args.json:
        _print_json([r.__dict__ for r in rows])
    else:
        print(render(["worker", "alive", "pod", "queues", "conc", "isolation", "busy", "running"],
                     [[w.id, "yes" if w.alive else "NO", w.pod or "-", ",".join(w.queues),
                       w.concurrency, w.isolation, len(w.busy),
                       ", ".join(f"{b['job']}:{b['id'][-6:]}" for b in w.busy[:3])] for w in rows]))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    s = _inspector(args).stats()
    if args.json:
        _print_json(s)
    else:
        print(render(list(s), [list(s.values())]))
    return 0


def _zrows(rows: list[tuple[dict[str, Any], int]], args: argparse.Namespace, when: str) -> int:
    from podjobs.ops import age

    if args.json:
        _print_json([{"score_ms": s, **d} for d, s in rows])
        return 0
    print(render(["id", "job", "queue", "attempt", when, "reason/error"],
                 [[d.get("id"), _summary(d), d.get("queue"), d.get("attempt"), age(s),
                   (d.get("dead_reason", "") + " " + str((d.get("error") or {}).get("message", "")))[:60]]
                  for d, s in rows]))
    return 0


def cmd_dead(args: argparse.Namespace) -> int:
    ins = _inspector(args)
    if args.action == "list":
        return _zrows(ins.dead(args.limit), args, "died")
    if not args.ids and not args.all:
        raise ConfigurationError(f"dead {args.action} needs job ids or --all")
    if args.action == "retry":
        n = ins.dead_retry_all() if args.all else sum(ins.dead_retry(i) for i in args.ids)
        print(f"{n} dead job(s) put back on their queues")
    else:
        n = ins.dead_clear() if args.all else sum(ins.dead_delete(i) for i in args.ids)
        print(f"{n} dead job(s) deleted")
    return 0


def cmd_scheduled(args: argparse.Namespace) -> int:
    return _zrows(_inspector(args).scheduled(args.limit), args, "due")


def cmd_retries(args: argparse.Namespace) -> int:
    return _zrows(_inspector(args).retries(args.limit), args, "next try")


def cmd_job_show(args: argparse.Namespace) -> int:
    from podjobs.ops import age

    found = _inspector(args).find_job(args.id)
    if args.json:
        _print_json(found.as_dict())
    else:
        print(f"job {args.id}: {found.where} on queue {found.queue}"
              + (f" (worker {found.worker})" if found.worker else "")
              + (f", {age(found.score_ms)}" if found.score_ms else ""))
        print(json.dumps(found.payload, indent=2))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from podjobs.backend import RedisBackend
    from podjobs.worker import Worker, WorkerConfig

    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, os.getcwd())
    apps = [m for a in args.app for m in a.split(",") if m]
    for m in apps:
        try:
            importlib.import_module(m)
        except ImportError as exc:
            raise ConfigurationError(f"--app {m}: cannot import it ({exc}); run from the directory "
                                     f"that holds it or put it on PYTHONPATH") from exc
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    if args.isolation not in ("thread", "process"):
        raise ConfigurationError(f"--isolation {args.isolation!r}: use thread or process")
    cfg = WorkerConfig(queues=queues, concurrency=args.concurrency, isolation=args.isolation,
                       shutdown_timeout=args.shutdown_timeout, heartbeat_ttl=args.heartbeat_ttl,
                       poll_interval=args.poll_interval, batch=args.batch, prefetch=args.prefetch,
                       idle_wait=min(1.0, args.heartbeat_ttl / 3),
                       max_jobs_per_child=args.max_jobs_per_child, max_memory_mb=args.max_memory_mb,
                       app_modules=apps)
    if args.pod and not args.redis:
        if _run_pod_worker is None:
            raise _no_pods()
        _run_pod_worker(args.zk, args.pod, cfg)
        return 0
    url, _ = resolve_redis(args)
    Worker(RedisBackend(url), cfg).run()
    return 0


def register(sub: Any) -> None:
    def listing(name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
        add_target_args(p)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)
        return p

    listing("queues", "size and oldest-job latency of each queue", cmd_queues)
    listing("workers", "live workers and what they run", cmd_workers)
    listing("stats", "processed, failed, dead and recovered counters", cmd_stats)

    p = listing("dead", "list, retry or delete dead jobs", cmd_dead)
    p.add_argument("action", choices=["list", "retry", "delete"])
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="every dead job")
    p.add_argument("--limit", type=int, default=50)

    p = listing("scheduled", "jobs scheduled for later", cmd_scheduled)
    p.add_argument("action", choices=["list"])
    p.add_argument("--limit", type=int, default=50)

    p = listing("retries", "failed jobs waiting for their next attempt", cmd_retries)
    p.add_argument("action", choices=["list"])
    p.add_argument("--limit", type=int, default=50)

    p = listing("job", "show where one job is and its payload", cmd_job_show)
    p.add_argument("action", choices=["show"])
    p.add_argument("id")

    w: argparse.ArgumentParser = sub.add_parser(
        "worker", help="run a worker for one pod's queues",
        description="Run jobs from a priority-ordered queue list until SIGTERM.")
    add_target_args(w)
    w.add_argument("--app", action="append", required=True, metavar="MODULE",
                   help="module(s) that define the jobs (repeat or comma-separate)")
    w.add_argument("--queues", default="default", help="queue list in priority order (default: default)")
    w.add_argument("--concurrency", type=int, default=10, help="jobs at once (threads or children)")
    w.add_argument("--isolation", default="thread", help="thread (default) or process")
    w.add_argument("--shutdown-timeout", type=float, default=25.0,
                   help="seconds running jobs get after SIGTERM (default 25)")
    w.add_argument("--heartbeat-ttl", type=float, default=20.0,
                   help="seconds without heartbeat before this worker's jobs are taken over (default 20)")
    w.add_argument("--poll-interval", type=float, default=1.0,
                   help="seconds between promotions of due scheduled jobs (default 1)")
    w.add_argument("--batch", type=int, default=100, help="most jobs reserved per call")
    w.add_argument("--prefetch", type=int, default=None,
                   help="jobs buffered beyond --concurrency (default: = concurrency)")
    w.add_argument("--max-jobs-per-child", type=int, default=1000, help="process isolation: recycle after N jobs")
    w.add_argument("--max-memory-mb", type=float, default=None, help="process isolation: kill a child above this RSS")
    w.add_argument("--log-level", default="info")
    w.set_defaults(func=cmd_worker)
