"""A worker for one pod: its Redis and shard come from the topology in ZooKeeper.

1. Looks the pod up in the directory (an unknown pod is refused, naming the
   known ones) and takes its Redis URL and shard URL from there.
2. Installs the tenant check (jobs run only on their tenant's pod) and gives
   jobs `ctx.db` on the pod's shard; creates the shard's tenant fence table
   (pods/fence.py), which every tenant job's commit reads.
3. Registers the worker as an ephemeral ZooKeeper node for `podjobs fleet`
   (re-created after a session expiry) for as long as it runs.

The jobs it runs are those of `config.app_modules`; `podjobs worker --pod` also gives
it the scheduler's migration job (`podjobs.scheduler.migrate.pod_worker`).
"""

from __future__ import annotations

import logging
import os
import socket
import time

from podjobs.backend import open_backend
from podjobs.worker import Worker, WorkerConfig

from . import fence
from .directory import Directory
from .registration import WorkerRegistration
from .router import Router
from .tenantcheck import TenantCheck
from .zk import ZK

log = logging.getLogger("podjobs.pods.podworker")


class PodWorker:
    """Worker + directory + registration for one pod."""

    def __init__(self, zk: ZK, pod: str, config: WorkerConfig, *,
                 max_buckets: int | None = None) -> None:
        self.zk = zk
        #: max_buckets: tenant buckets kept loaded (None: $PODJOBS_DIRECTORY_BUCKETS or 256)
        self.directory = Directory(zk, max_buckets=max_buckets)
        self.directory.start()
        info = self.directory.pod(pod)  # UnknownPod names the known pods
        self.router = Router(self.directory)
        backend = open_backend(info.backend, info.redis_url, info.shard_url)
        try:  # the move fence every tenant job's commit reads (pods/fence.py)
            fence.ensure_table(info.shard_url)
        except Exception as exc:  # jobs' commits create it later (and are retried once)
            log.warning("cannot create the tenant fence table on pod %s's shard: %s", pod, exc)
        # the scheduler's migration job comes with config.app_modules: `podjobs worker --pod`
        # adds it (podjobs.scheduler.migrate.pod_worker); pods know nothing of the scheduler
        cfg = config._replace(pod=pod, shard_url=info.shard_url)
        self.worker = Worker(backend, cfg)
        self.check = TenantCheck(self.router, pod, backend, self.worker.identity)
        self.worker.config = cfg._replace(middleware=[self.check, *cfg.middleware])
        self.registration = WorkerRegistration(zk, pod, self.worker.id, {
            "pod": pod, "host": socket.gethostname(), "pid": os.getpid(),
            "queues": list(cfg.queues), "concurrency": cfg.concurrency,
            "isolation": cfg.isolation, "started": time.time()})

    def start(self) -> None:
        self.worker.start()
        self.registration.start()
        self.check.ack_all_moving()

    def stop(self) -> None:
        self.worker.stop()
        self._close()

    def run(self) -> None:
        self.registration.start()
        self.check.ack_all_moving()
        try:
            self.worker.run()
        finally:
            self._close()

    def _close(self) -> None:
        self.check.close()
        self.registration.stop()
        self.router.close()
        self.directory.stop()
