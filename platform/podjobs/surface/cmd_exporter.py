"""`podjobs exporter`: Prometheus gauges of every pod (queues, workers, dead set) and of the
migration rollout, served once for the fleet (workers export only their own jobs' series).

    podjobs exporter [--zk HOST:PORT/root] --metrics-port 9108 [--metrics-host 0.0.0.0]
    podjobs exporter --redis URL --pod-name p1 --metrics-port 9108

Each scrape reads each pod's Redis (short timeouts; a pod that does not answer is
`podjobs_pod_up 0`) and the migration status in ZooKeeper (podjobs.podmetrics,
podjobs.scheduler.metrics). `/healthz` answers 200 while ZooKeeper is connected (or with
`--redis`, always). Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import threading

from .options import (
    Commands,
    add_log_args,
    add_metrics_args,
    open_zk,
    resolve_zk_spec,
    setup_logs,
    zk_options,
)

#: seconds a scrape waits for one pod's Redis
READ_TIMEOUT_S = 2.0


def cmd_exporter(args: argparse.Namespace) -> int:
    from prometheus_client.registry import CollectorRegistry

    from podjobs.backend import RedisBackend
    from podjobs.exposition import Health, MetricsServer
    from podjobs.iteration.metrics import IterationCollector
    from podjobs.podmetrics import PodCollector

    setup_logs(args)
    registry = CollectorRegistry()
    zk = None
    health: Health
    if args.redis:
        backend = RedisBackend(args.redis, check=False, socket_timeout=READ_TIMEOUT_S,
                               connect_timeout=READ_TIMEOUT_S)
        registry.register(PodCollector(lambda: {args.pod_name: backend}))
        registry.register(IterationCollector(lambda: {args.pod_name: backend}))

        def health() -> tuple[bool, str]:
            return True, "ok"
    else:
        from podjobs.pods.directory import Directory
        from podjobs.scheduler.metrics import MigrationCollector

        zk = open_zk(resolve_zk_spec(args.zk), connect_timeout=10)
        directory = Directory(zk, follow_moves=False)  # loads no tenant
        directory.start()
        clients: dict[str, RedisBackend] = {}

        def backends() -> dict[str, RedisBackend]:
            for name, pod in directory.pods().items():
                b = clients.get(name)
                if b is None or b.url != pod.redis_url:
                    clients[name] = RedisBackend(pod.redis_url, check=False,
                                                 socket_timeout=READ_TIMEOUT_S,
                                                 connect_timeout=READ_TIMEOUT_S)
            return {n: b for n, b in clients.items() if n in directory.pods()}

        registry.register(PodCollector(backends))
        registry.register(IterationCollector(backends))
        registry.register(MigrationCollector(zk))

        def health() -> tuple[bool, str]:
            if directory.stale:
                return False, "ZooKeeper is disconnected: the directory may be stale"
            return True, "ok"
    probe = MetricsServer(registry, health, args.metrics_host, args.metrics_port).start()
    print(f"podjobs exporter: http://{args.metrics_host}:{probe.port}/metrics", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    probe.stop()
    if zk is not None:
        zk.stop()
    return 0


def register(cmds: Commands) -> None:
    p = cmds.command("exporter", "serve every pod's queue gauges to Prometheus", cmd_exporter,
                     parents=[zk_options()],
                     description="Serve Prometheus gauges of every pod (queues, workers, dead "
                                 "set) and of the migration rollout on --metrics-port.")
    p.add_argument("--redis", help="one pod's Redis instead of the topology in ZooKeeper")
    p.add_argument("--pod-name", default="default", help="the pod label with --redis")
    add_metrics_args(p)
    p.set_defaults(metrics_port=9108)
    add_log_args(p)
