"""`podjobs worker`: run a worker for one pod's queues until SIGTERM.

    podjobs worker --app MODULE --queues critical,default,low --concurrency N
    podjobs worker --app MODULE --redis URL --isolation process --max-memory-mb 500
    podjobs worker --app MODULE --pod NAME [--zk HOSTS/ROOT]
    podjobs worker --app MODULE --database-url URL   (the SQL backend, no Redis)

With `--redis URL` (or `$PODJOBS_REDIS_URL`) a plain worker (podjobs.worker) runs; with
`--database-url URL` (or `$PODJOBS_DATABASE_URL`) one on the SQL backend (podjobs.sqlbackend);
with `--pod NAME` (and no --redis) a pod worker on the topology in ZooKeeper that also
runs the scheduler's migration job (podjobs.scheduler.migrate.pod_worker). Under systemd
(`$NOTIFY_SOCKET`) it sends READY once its heartbeat runs and WATCHDOG while Redis
confirms it (podjobs.sdnotify).

    podjobs worker check [--pod NAME | --redis URL] [--host H] [--pid N] [--id ID] [--json]
        an exec probe: exit 0 when a worker of this host has a fresh heartbeat on the pod's
        Redis, 1 when none has, 3 when Redis is unreachable (podjobs.checks)
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from podjobs.errors import ConfigurationError

from .options import (
    APP_HINT,
    Commands,
    add_log_args,
    add_metrics_args,
    add_target_args,
    app_modules,
    import_apps,
    open_zk,
    resolve_redis,
    resolve_zk_spec,
    setup_logs,
)


def _pinger(worker: Any) -> Any:
    """READY/WATCHDOG to systemd: ready once the heartbeat thread runs (the last thing the
    worker starts), alive while Redis confirms its beats."""
    from podjobs.sdnotify import Pinger

    hb = worker.heartbeat
    return Pinger(lambda: hb._thread.is_alive() and not hb.stale(),
                  status=f"worker {worker.id}").start()


def _supervise(args: argparse.Namespace, processes: int) -> int:
    """`--processes N`: this command line N times under a supervisor (podjobs.supervisor)."""
    from podjobs.sdnotify import Pinger
    from podjobs.signals import CHILD_STOP_GRACE_S, EXIT_MARGIN_S
    from podjobs.supervisor import Supervisor, worker_command

    argv = getattr(args, "argv", None)
    if argv is None:
        import sys

        argv = sys.argv[1:]
    sup = Supervisor(worker_command(argv), processes,
                     stop_wait=args.shutdown_timeout + CHILD_STOP_GRACE_S + EXIT_MARGIN_S + 5.0)
    pinger = Pinger(sup.healthy, status=f"{processes} worker processes")
    try:
        return sup.run(on_started=pinger.start)
    finally:
        pinger.stop()


def cmd_worker(args: argparse.Namespace) -> int:
    from podjobs.backend import RedisBackend
    from podjobs.worker import Worker, WorkerConfig

    if not args.app:
        raise ConfigurationError("podjobs worker needs --app MODULE (the module that defines "
                                 "the jobs)")
    setup_logs(args)
    if args.processes == "1":  # the default: no supervisor, and nothing of it imported
        processes, slot = 1, None
    else:
        from podjobs.supervisor import ENV_SLOT, parse_processes

        processes = parse_processes(args.processes)
        slot = os.environ.get(ENV_SLOT)
    if processes > 1 and slot is None:
        return _supervise(args, processes)
    if slot is not None and args.metrics_port is not None:
        args.metrics_port += int(slot)
    apps = app_modules(args.app)
    import_apps(apps, APP_HINT)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    if args.isolation not in ("thread", "process"):
        raise ConfigurationError(f"--isolation {args.isolation!r}: use thread or process")
    cfg = WorkerConfig(queues=queues, concurrency=args.concurrency, isolation=args.isolation,
                       shutdown_timeout=args.shutdown_timeout, heartbeat_ttl=args.heartbeat_ttl,
                       poll_interval=args.poll_interval, batch=args.batch, prefetch=args.prefetch,
                       idle_wait=min(1.0, args.heartbeat_ttl / 3),
                       max_jobs_per_child=args.max_jobs_per_child, max_memory_mb=args.max_memory_mb,
                       app_modules=apps, metrics_port=args.metrics_port,
                       metrics_host=args.metrics_host, metrics_top_tenants=args.metrics_top_tenants)
    db_url = args.database_url or (None if args.redis or args.pod else os.environ.get("PODJOBS_DATABASE_URL"))
    if db_url:
        if args.redis or args.pod:
            raise ConfigurationError("podjobs worker takes --database-url or --redis/--pod, not "
                                     "both: a worker serves one pod's queue on one backend")
        from podjobs.sqlbackend import SqlBackend

        sw = Worker(SqlBackend(db_url), cfg)
        sql_pinger = _pinger(sw)
        try:
            sw.run()
        finally:
            sql_pinger.stop()
        return 0
    if args.pod and not args.redis:
        from podjobs.scheduler.migrate import pod_worker

        zk = open_zk(resolve_zk_spec(args.zk), connect_timeout=10)
        pw = pod_worker(zk, args.pod, cfg, max_buckets=args.directory_buckets)
        pinger = _pinger(pw.worker)
        try:
            pw.run()
        finally:
            pinger.stop()
            zk.stop()
        return 0
    url, _ = resolve_redis(args)
    w = Worker(RedisBackend(url), cfg)
    pinger = _pinger(w)
    try:
        w.run()
    finally:
        pinger.stop()
    return 0


def cmd_worker_check(args: argparse.Namespace) -> int:
    """The exec probe (exit codes in podjobs.checks)."""
    import socket

    from podjobs.backend import RedisBackend
    from podjobs.checks import UNREACHABLE, Verdict, worker_verdict
    from podjobs.errors import BackendUnavailable
    from podjobs.gateway import RedisError
    from podjobs.ops import Inspector

    url, _ = resolve_redis(args)
    host = args.host or socket.gethostname()
    try:
        b = RedisBackend(url, check=False, socket_timeout=args.timeout,
                         connect_timeout=args.timeout, retries=0)  # answer within --timeout
        rows = [{"id": w.id, "host": w.host, "pid": w.pid, "alive": w.alive, "busy": len(w.busy)}
                for w in Inspector(b).workers()]
        v = worker_verdict(rows, host, args.pid, args.id)
    except (BackendUnavailable, RedisError, OSError) as exc:
        v = Verdict(UNREACHABLE, f"Redis {url} is unreachable: {exc}")
    return v.report(args.json)


def register(cmds: Commands) -> None:
    w = cmds.command("worker", "run a worker for one pod's queues", cmd_worker,
                     description="Run jobs from a priority-ordered queue list until SIGTERM.")
    add_target_args(w)
    w.add_argument("--database-url", metavar="URL", default=None,
                   help="run on the SQL backend in this database (sqlite:////path/jobs.db, "
                        "mysql+pymysql://...; default $PODJOBS_DATABASE_URL) instead of Redis")
    w.add_argument("--app", action="append", metavar="MODULE",
                   help="module(s) that define the jobs (repeat or comma-separate; required)")
    w.add_argument("--queues", default="default", help="queue list in priority order (default: default)")
    w.add_argument("--concurrency", type=int, default=10, help="jobs at once (threads or children)")
    w.add_argument("--processes", default="1", metavar="N",
                   help="worker processes under this one command (default 1; 'auto': one per "
                        "core; a process uses at most one core); each has --concurrency, its "
                        "own worker id, and --metrics-port + its slot")
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
    w.add_argument("--directory-buckets", type=int, default=None, metavar="N",
                   help="with --pod: tenant buckets of the directory kept loaded and watched, "
                        "least recently used dropped (default $PODJOBS_DIRECTORY_BUCKETS, else "
                        "256 of the 1,024)")
    add_log_args(w, job_log=True)
    add_metrics_args(w)
    w.add_argument("--metrics-top-tenants", type=int, default=0, metavar="N",
                   help="also export job counts of the N busiest tenants (default 0: no tenant label)")
    cmds.subgroup(w, "worker")
    c = cmds.command(
        "check", "exec probe: is a worker of this host alive (heartbeat fresh, Redis reachable)?",
        cmd_worker_check, under="worker",
        description="Exec probe for Kubernetes or a supervisor. Exit 0: a worker of this host "
                    "(--host, default the hostname; --pid or --id narrow it) has a fresh "
                    "heartbeat on the pod's Redis; 1: none has (not started, exited, hung or "
                    "cut off); 2: a usage error; 3: Redis unreachable.")
    add_target_args(c)
    c.add_argument("--host", help="the workers' host name (default: this host's)")
    c.add_argument("--pid", type=int, help="only the worker with this pid")
    c.add_argument("--id", help="only the worker whose id starts with this")
    c.add_argument("--timeout", type=float, default=2.0, help="seconds Redis may take (default 2)")
    c.add_argument("--json", action="store_true", help="print the verdict as JSON")
