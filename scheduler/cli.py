"""`podjobs scheduler` and `podjobs migrations`.

    podjobs scheduler --app MODULE [--migrations DIR] [--canary POD] [--wave N] ...
        run a scheduler process (several may run: one leads, the others stand by)
    podjobs scheduler status [--json]          who leads, since when, who stands by
    podjobs migrations status [--json]         per shard: current, pending, running, failures
    podjobs migrations wait [--revision R] --timeout S
        exit 0 when every shard completed R (default: head), 1 when a migration
        failed or is halted, 2 on timeout; prints progress while it waits
    podjobs migrations retry REVISION [--pod P]    clear a failure; the leader queues it again
    podjobs migrations cancel REVISION [--pod P]   cancel queued runs, stop running ones
    podjobs migrations skip REVISION --pod P --migrations DIR
        stamp the revision on one shard without running it (after a manual fix)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from podjobs.errors import ConfigurationError
from podjobs.pods.cli import _common, connect, resolve_zk_spec
from podjobs.pods.zk import DEFAULT_ROOT, ZK, parse_zk_spec
from podjobs.table import render

from .leader import contenders, leader_info

if TYPE_CHECKING:
    from podjobs.pods.worker import PodWorker
    from podjobs.worker import WorkerConfig


def _ago(t: float | None) -> str:
    if not t:
        return "-"
    s = max(0.0, time.time() - float(t))
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago"


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t))) if t else "-"


def _admin() -> Any:
    """scheduler.admin (Alembic, SQLAlchemy): loaded by the commands that use it."""
    from . import admin

    return admin


def _status() -> Any:
    """scheduler.status (SQLAlchemy through runs): loaded by the commands that use it."""
    from . import status

    return status


# -- pod workers --------------------------------------------------------------------


def pod_worker(zk: ZK, pod: str, config: WorkerConfig) -> PodWorker:
    """A pod's worker that also runs the scheduler's migration job (`podjobs.migrate`),
    in process-isolation children too: what `podjobs worker --pod` runs. (The pods
    package knows nothing of the scheduler; this is where the two meet.)"""
    from podjobs.pods.worker import PodWorker

    from . import migrate

    apps = list(config.app_modules)
    if migrate.__name__ not in apps:
        apps.append(migrate.__name__)
    return PodWorker(zk, pod, dataclasses.replace(config, app_modules=apps))


def run_pod_worker(zk_flag: str | None, pod: str, config: WorkerConfig) -> None:
    """`podjobs worker --pod POD`: `pod_worker` on the topology in ZooKeeper, until SIGTERM."""
    hosts, root = parse_zk_spec(resolve_zk_spec(zk_flag))
    zk = ZK(hosts, root=root or DEFAULT_ROOT).start(timeout=10)
    try:
        pod_worker(zk, pod, config).run()
    finally:
        zk.stop()


# -- scheduler ----------------------------------------------------------------------


def cmd_scheduler(args: argparse.Namespace) -> int:
    from podjobs.cron import registered
    from podjobs.pods.directory import Directory
    from podjobs.pods.router import Router

    from .migrations import MigrationsConfig, MigrationsDuty
    from .periodic import PeriodicDuty
    from .process import Duty, Scheduler

    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, os.getcwd())
    for m in [m for a in args.app for m in a.split(",") if m]:
        try:
            importlib.import_module(m)
        except ImportError as exc:
            raise ConfigurationError(f"--app {m}: cannot import it ({exc})") from exc
    spec = resolve_zk_spec(args.zk)
    hosts, root = parse_zk_spec(spec)
    zk = ZK(hosts, root=root or DEFAULT_ROOT, timeout=args.session_timeout).start()
    directory = Directory(zk)
    directory.start()
    router = Router(directory, check_backends=False)
    duties: list[Duty] = []
    specs = list(registered().values())
    if specs:  # first: a slow shard read of the migrations duty must not make ticks late
        duties.append(PeriodicDuty(zk, router, specs))
    if args.migrations:
        duties.append(MigrationsDuty(zk, MigrationsConfig(
            directory=args.migrations, zk_spec=f"{hosts}{root or DEFAULT_ROOT}",
            zk_timeout=args.session_timeout, queue=args.queue, canary=args.canary,
            wave_size=args.wave, requeue_after=args.requeue_after,
            orphan_after=args.requeue_after, steal_after=args.steal_after,
            lock_wait_timeout=args.lock_wait_timeout)))
    if not duties:
        raise ConfigurationError("nothing to schedule: pass --migrations DIR and/or an --app whose "
                                 "module declares @podjobs.periodic jobs")
    ident: dict[str, object] = {"migrations": args.migrations or "", "periodic": len(specs)}
    if args.id:
        ident["id"] = args.id
    sched = Scheduler(zk, duties, interval=args.interval, identity=ident)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logging.getLogger(__name__).info("scheduler %s: signal %d, stopping", sched.id, signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logging.getLogger(__name__).info(
        "scheduler %s started: duties=%s, zk=%s", sched.id, ",".join(d.name for d in duties), spec)
    try:
        sched.run(stop)
    finally:
        directory.stop()
        zk.stop()
    return 0


def cmd_scheduler_status(args: argparse.Namespace) -> int:
    with connect(args) as zk:
        lead = leader_info(zk)
        who = contenders(zk)
    if args.json:
        print(json.dumps({"leader": lead, "contenders": who}, indent=2, sort_keys=True))
        return 0
    if lead is None:
        print("no scheduler leads" + (" (contenders are electing one)" if who else
                                      " (none is running)"))
    else:
        print(f"leader: {lead.get('id')} (host {lead.get('host')}, pid {lead.get('pid')}), "
              f"term {lead.get('term')}, since {_when(lead.get('since'))} ({_ago(lead.get('since'))})")
    standby = [c.get("id") for c in who if not lead or c.get("id") != lead.get("id")]
    print("standing by: " + (", ".join(str(s) for s in standby) if standby else "none"))
    return 0


# -- migrations ---------------------------------------------------------------------


def cmd_migrations_status(args: argparse.Namespace) -> int:
    with connect(args) as zk:
        st = _status().collect(zk)
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True, default=str))
        return 0
    lead = st["leader"]
    print(f"head: {st['head'] or '-'}   leader: {lead['id'] if lead else 'none'}")
    rows = []
    for s in st["shards"]:
        running = ", ".join(
            f"{r['revision']} {r['state']}" + (f" on {r['worker']}" if r["worker"] else "")
            + (f" since {_ago(r['since'])}" if r["since"] else "")
            + (f" {r['progress']['percent']:.0f}%" if (r.get("progress") or {}).get("percent")
               is not None else "")
            for r in s["running"]) or "-"
        failed = "; ".join(f"{f['revision']} {f['state']}: {f['error']}" for f in s["failures"]) or "-"
        cur = s["current"] if s["known"] else f"? ({s['read_error'] or 'not read yet'})"
        rows.append([s["pod"], s["pod_state"], cur or "base", ",".join(s["pending"]) or "-",
                     running, failed])
    print(render(["POD", "STATE", "CURRENT", "PENDING", "RUNNING", "FAILED"], rows))
    for rev, h in sorted(st["halts"].items()):
        print(f"halted: {rev} (pod {h.get('pod')}): {h.get('error')}")
    return 0


def cmd_migrations_wait(args: argparse.Namespace) -> int:
    def progress(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    code: int
    with connect(args) as zk:
        code, line = _status().wait(zk, args.revision, args.timeout, args.interval, progress)
    print(line, flush=True)
    return code


def cmd_migrations_retry(args: argparse.Namespace) -> int:
    with connect(args) as zk:
        cleared = _admin().retry(zk, args.revision, args.pod)
    print(f"{args.revision}: cleared on {', '.join(cleared) or 'no shard'}; halt lifted; the leader "
          f"queues it again")
    return 0


def cmd_migrations_cancel(args: argparse.Namespace) -> int:
    with connect(args) as zk:
        out = _admin().cancel(zk, args.revision, args.pod)
    for p, what in sorted(out.items()):
        print(f"{p}: {what}")
    print(f"{args.revision} is halted; 'podjobs migrations retry {args.revision}' to go on")
    return 0


def cmd_migrations_skip(args: argparse.Namespace) -> int:
    with connect(args) as zk:
        _admin().skip(zk, args.revision, args.pod, args.migrations)
    print(f"{args.pod}: {args.revision} stamped as applied (not run)")
    return 0


# -- parser -------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    common = _common()
    p = subparsers.add_parser(
        "scheduler", parents=[common],
        help="run a scheduler (migrations as jobs, periodic jobs), or 'scheduler status'",
        description="Run a scheduler process: one of several leads (ZooKeeper election) and "
                    "queues pending migrations per shard and periodic jobs; the others stand by.")
    p.add_argument("--app", action="append", default=[], metavar="MODULE",
                   help="module(s) to import: periodic jobs, revisions' backfill jobs")
    p.add_argument("--migrations", metavar="DIR", help="Alembic script directory (with versions/)")
    p.add_argument("--canary", metavar="POD", help="pod migrated first (default: the first by name)")
    p.add_argument("--wave", type=int, default=1, metavar="N",
                   help="pods migrated at once after the canary (default 1)")
    p.add_argument("--queue", default="default", help="queue of the migration jobs (default: default)")
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="seconds between two passes of the leader (default 1)")
    p.add_argument("--session-timeout", type=float, default=10.0, metavar="S",
                   help="ZooKeeper session timeout: a standby takes over within it (default 10)")
    p.add_argument("--requeue-after", type=float, default=30.0, metavar="S",
                   help="seconds before a run whose job vanished is queued again (default 30)")
    p.add_argument("--steal-after", type=float, default=5.0, metavar="S",
                   help="seconds a runner waits on a stale holder of the shard lock (default 5)")
    p.add_argument("--lock-wait-timeout", type=int, default=60, metavar="S",
                   help="seconds a DDL may wait for a table's metadata lock (default 60)")
    p.add_argument("--id", help="this scheduler's name in 'scheduler status' (default host:pid)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_scheduler)
    sub = p.add_subparsers(dest="scheduler_command", metavar="COMMAND")
    s = sub.add_parser("status", parents=[common], help="who leads, since when, who stands by")
    s.set_defaults(func=cmd_scheduler_status)

    m = subparsers.add_parser("migrations", help="migration rollout: status, wait, retry, cancel, skip",
                              description="Migrations run by the scheduler, one at a time per shard.")

    def usage(_args: argparse.Namespace) -> int:
        m.print_help(sys.stderr)
        return 2

    m.set_defaults(func=usage)
    msub = m.add_subparsers(dest="migrations_command", metavar="COMMAND")
    s = msub.add_parser("status", parents=[common],
                        help="per shard: current, pending, running (where, since, progress), failures")
    s.set_defaults(func=cmd_migrations_status)
    s = msub.add_parser("wait", parents=[common],
                        help="wait until every shard reached a revision: exit 0 done, 1 failed, "
                             "2 timeout")
    s.add_argument("--revision", metavar="R", help="the revision to wait for (default: head)")
    s.add_argument("--timeout", type=float, required=True, metavar="S")
    s.add_argument("--interval", type=float, default=1.0, metavar="S", help="poll interval")
    s.set_defaults(func=cmd_migrations_wait)
    for name, helptext, func in (
            ("retry", "clear a failed or cancelled revision; the leader queues it again",
             cmd_migrations_retry),
            ("cancel", "cancel a revision's queued runs, stop running ones, halt it",
             cmd_migrations_cancel)):
        s = msub.add_parser(name, parents=[common], help=helptext)
        s.add_argument("revision", metavar="REVISION")
        s.add_argument("--pod", metavar="POD", help="only this pod's shard")
        s.set_defaults(func=func)
    s = msub.add_parser("skip", parents=[common],
                        help="stamp a revision on one shard without running it (after a manual fix)")
    s.add_argument("revision", metavar="REVISION")
    s.add_argument("--pod", required=True, metavar="POD")
    s.add_argument("--migrations", required=True, metavar="DIR")
    s.set_defaults(func=cmd_migrations_skip)
