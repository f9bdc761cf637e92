"""`podjobs queues|workers|stats|dead|scheduled|retries|job`: one pod's queue.

    podjobs queues | workers | stats
    podjobs dead list | retry ID... | retry --all | delete ID... | delete --all
    podjobs scheduled list
    podjobs retries list
    podjobs job show ID

Which Redis: `--redis URL`, or `--pod NAME` with the topology in ZooKeeper (`--zk`, else
`$PODJOBS_ZK`, else the topology file written by `podjobs dev up`), or
`$PODJOBS_REDIS_URL` (options.resolve_redis). Every listing takes `--json`.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from podjobs.errors import ConfigurationError
from podjobs.table import render

from .options import Commands, add_target_args, print_json, resolve_redis

if TYPE_CHECKING:  # Redis loads in the commands, not for --help
    from podjobs.ops import Inspector


def _inspector(args: argparse.Namespace) -> Inspector:
    from podjobs.backend import RedisBackend
    from podjobs.ops import Inspector

    url, _ = resolve_redis(args)
    return Inspector(RedisBackend(url, check=False))


def _summary(d: dict[str, Any]) -> str:
    args = json.dumps(d.get("args", []))[:40]
    return f"{d.get('job')}({args[1:-1]})"


# -- commands ---------------------------------------------------------------------------


def cmd_queues(args: argparse.Namespace) -> int:
    rows = _inspector(args).queues()
    if args.json:
        print_json([r.__dict__ for r in rows])
    else:
        print(render(["queue", "size", "latency_s", "scheduled", "retrying", "in_flight"],
                     [[r.name, r.size, r.latency_s, r.scheduled, r.retrying, r.in_flight] for r in rows]))
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    rows = _inspector(args).workers()
    if args.json:
        print_json([r.__dict__ for r in rows])
    else:
        print(render(["worker", "alive", "pod", "queues", "conc", "isolation", "busy", "running"],
                     [[w.id, "yes" if w.alive else "NO", w.pod or "-", ",".join(w.queues),
                       w.concurrency, w.isolation, len(w.busy),
                       ", ".join(f"{b['job']}:{b['id'][-6:]}" for b in w.busy[:3])] for w in rows]))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    s = _inspector(args).stats()
    if args.json:
        print_json(s)
    else:
        print(render(list(s), [list(s.values())]))
    return 0


def _zrows(rows: list[tuple[dict[str, Any], int]], args: argparse.Namespace, when: str) -> int:
    from podjobs.ops import age

    if args.json:
        print_json([{"score_ms": s, **d} for d, s in rows])
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
        print_json(found.as_dict())
    else:
        print(f"job {args.id}: {found.where} on queue {found.queue}"
              + (f" (worker {found.worker})" if found.worker else "")
              + (f", {age(found.score_ms)}" if found.score_ms else ""))
        print(json.dumps(found.payload, indent=2))
    return 0


def register(cmds: Commands) -> None:
    def listing(name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        p = cmds.command(name, help_, func)
        add_target_args(p)
        p.add_argument("--json", action="store_true", help="print JSON")
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
