"""`podjobs scheduler`: run a scheduler process; `podjobs scheduler status`: who leads.

    podjobs scheduler --app MODULE [--migrations DIR] [--canary POD] [--wave N] ...
        run a scheduler process (several may run: one leads, the others stand by);
        it queues pending migrations per shard and the ticks of periodic jobs
    podjobs scheduler status [--json]          who leads, since when, who stands by
    podjobs scheduler check [--id ID] [--require-leader] [--json]
        an exec probe: exit 0 when a scheduler of this host contends and one leads, 1 when
        none of this host contends, 3 when ZooKeeper is unreachable, 4 when no scheduler
        leads (podjobs.checks)
Under systemd (`$NOTIFY_SOCKET`) the scheduler sends READY once it contends and WATCHDOG
while its ZooKeeper session is connected (podjobs.sdnotify).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from typing import Any

from podjobs.errors import ConfigurationError
from podjobs.table import ago

from .options import (
    DEFAULT_ROOT,
    Commands,
    add_log_args,
    add_metrics_args,
    app_modules,
    connect,
    import_apps,
    open_zk,
    print_json,
    resolve_zk_spec,
    setup_logs,
    zk_options,
)
from .schema import iso


def _ago(t: float | None) -> str:
    """`5m 12s ago` (table.ago), `-` when unknown."""
    return ago(float(t)) if t else "-"


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t))) if t else "-"


def cmd_scheduler(args: argparse.Namespace) -> int:
    from podjobs.cron import registered
    from podjobs.pods.directory import Directory
    from podjobs.pods.router import Router
    from podjobs.pods.zk import parse_zk_spec
    from podjobs.scheduler.migrations import MigrationsConfig, MigrationsDuty
    from podjobs.scheduler.periodic import PeriodicDuty
    from podjobs.scheduler.process import Duty, Scheduler

    setup_logs(args)
    import_apps(app_modules(args.app))
    spec = resolve_zk_spec(args.zk)
    hosts, root = parse_zk_spec(spec)
    zk = open_zk(spec, connect_timeout=10.0, session_timeout=args.session_timeout)
    directory = Directory(zk, follow_moves=False)  # loads no tenant
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
    from podjobs.sdnotify import Pinger

    pinger = Pinger(lambda: zk.connected, status=f"scheduler {sched.id}").start()
    logging.getLogger(__name__).info(
        "scheduler %s started: duties=%s, zk=%s", sched.id, ",".join(d.name for d in duties), spec)
    probe = None
    if args.metrics_port is not None:  # the rollout's gauges and a health probe (ZooKeeper)
        from prometheus_client.registry import CollectorRegistry

        from podjobs.exposition import MetricsServer
        from podjobs.scheduler.metrics import MigrationCollector

        registry = CollectorRegistry()
        registry.register(MigrationCollector(zk))
        probe = MetricsServer(registry, lambda: (not directory.stale, "ZooKeeper disconnected"
                                               if directory.stale else f"scheduler {sched.id}: ok"),
                            args.metrics_host, args.metrics_port).start()
    try:
        sched.run(stop)
    finally:
        pinger.stop()
        if probe is not None:
            probe.stop()
        pinger.stop()
        directory.stop()
        zk.stop()
    return 0


def cmd_scheduler_status(args: argparse.Namespace) -> int:
    from podjobs.scheduler.leader import contenders, leader_info

    with connect(args) as zk:
        lead = leader_info(zk)
        who = contenders(zk)
    if args.json:
        def one(c: dict[str, Any]) -> dict[str, Any]:
            return {**c, "since": iso(c.get("since")) if isinstance(c.get("since"), int | float)
                    else c.get("since")}

        print_json({"leader": one(lead) if lead else None,
                    "standing_by": [one(c) for c in who if not lead or c.get("id") != lead.get("id")]})
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


def cmd_scheduler_check(args: argparse.Namespace) -> int:
    """The exec probe (exit codes in podjobs.checks)."""
    import socket

    from podjobs.checks import UNREACHABLE, Verdict, scheduler_verdict

    try:
        zk = open_zk(resolve_zk_spec(args.zk), connect_timeout=args.timeout)
    except Exception as exc:  # kazoo's timeout, or a refused connection
        v = Verdict(UNREACHABLE, f"ZooKeeper is unreachable: {exc}")
    else:
        from podjobs.scheduler.leader import contenders, leader_info

        try:
            v = scheduler_verdict(contenders(zk), leader_info(zk), args.host or socket.gethostname(),
                                  args.id, args.require_leader)
        finally:
            zk.stop()
    return v.report(args.json)


# -- parser -------------------------------------------------------------------------


def register(cmds: Commands) -> None:
    common = zk_options()
    p = cmds.command(
        "scheduler", "run a scheduler (migrations as jobs, periodic jobs), or 'scheduler status'",
        cmd_scheduler, parents=[common],
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
    add_log_args(p)
    add_metrics_args(p)
    cmds.subgroup(p, "scheduler")
    cmds.command("status", "who leads, since when, who stands by", cmd_scheduler_status,
                 under="scheduler", parents=[common], description=None, noun="scheduler")
    c = cmds.command(
        "check", "exec probe: does a scheduler of this host take part, and does one lead?",
        cmd_scheduler_check, under="scheduler", parents=[common],
        description="Exec probe. Exit 0: a scheduler of this host (--host, default the "
                    "hostname; or --id) contends and a leader is elected; 1: none of this host "
                    "contends; 2: a usage error; 3: ZooKeeper unreachable; 4: no scheduler "
                    "leads (or, with --require-leader, this one does not).")
    c.add_argument("--host", help="the schedulers' host name (default: this host's)")
    c.add_argument("--id", help="the scheduler's --id instead of its host")
    c.add_argument("--require-leader", action="store_true", help="exit 4 unless this one leads")
    c.add_argument("--timeout", type=float, default=5.0, help="seconds to reach ZooKeeper (default 5)")
