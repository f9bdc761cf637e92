"""`podjobs worker`: run a worker for one pod's queues until SIGTERM.

    podjobs worker --app MODULE --queues critical,default,low --concurrency N
    podjobs worker --app MODULE --redis URL --isolation process --max-memory-mb 500
    podjobs worker --app MODULE --pod NAME [--zk HOSTS/ROOT]

With `--redis URL` (or `$PODJOBS_REDIS_URL`) a plain worker (podjobs.worker) runs;
with `--pod NAME` (and no --redis) a pod worker on the topology in ZooKeeper that also
runs the scheduler's migration job (podjobs.scheduler.migrate.pod_worker).
"""

from __future__ import annotations

import argparse

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


def cmd_worker(args: argparse.Namespace) -> int:
    from podjobs.backend import RedisBackend
    from podjobs.worker import Worker, WorkerConfig

    setup_logs(args)
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
    if args.pod and not args.redis:
        from podjobs.scheduler.migrate import pod_worker

        zk = open_zk(resolve_zk_spec(args.zk), connect_timeout=10)
        try:
            pod_worker(zk, args.pod, cfg).run()
        finally:
            zk.stop()
        return 0
    url, _ = resolve_redis(args)
    Worker(RedisBackend(url), cfg).run()
    return 0


def register(cmds: Commands) -> None:
    w = cmds.command("worker", "run a worker for one pod's queues", cmd_worker,
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
    add_log_args(w, job_log=True)
    add_metrics_args(w)
    w.add_argument("--metrics-top-tenants", type=int, default=0, metavar="N",
                   help="also export job counts of the N busiest tenants (default 0: no tenant label)")
