"""The outbox relay of one pod (podjobs.transactional.Relay), leader-elected per pod.

`PodRelay(zk, pod)` reads the pod (its shard and Redis) from the topology in ZooKeeper.
`run(stop)` contends for the pod's relay lock (kazoo's Lock recipe on
<root>/relays/<pod>): the holder moves committed outbox rows from the pod's shard to its
Redis until `stop` is set, the others wait as standbys and take over when it goes (its
session ends). Two relays at once (a holder whose session expired while it ran) stay safe:
each push is idempotent by job id (outbox_push.lua) and deleting a row twice is a no-op;
only the order of one tenant's jobs across their batches could interleave then.
`once()` moves what is there now, without the lock (the `--once` command, tests).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading

from podjobs.backend import RedisBackend
from podjobs.transactional import BATCH, Relay

from . import crashpoints
from .topology import TopologyStore
from .zk import ZK, LockTimeout

log = logging.getLogger("podjobs.relay")

#: seconds between tries for the lock (a stop is noticed within it)
LOCK_WAIT_S = 1.0


def lock_path(zk: ZK, pod: str) -> str:
    return zk.path("relays", pod)


class PodRelay:
    """One pod's relay process (see the module docstring)."""

    def __init__(self, zk: ZK, pod: str, *, batch: int = BATCH, idle_wait: float = 0.01) -> None:
        self.zk = zk
        self.pod_name = pod
        p = TopologyStore(zk).pod(pod)
        self.backend = RedisBackend(p.redis_url, check=False)
        self.relay = Relay(p.shard_url, self.backend, batch=batch, idle_wait=idle_wait)
        if os.environ.get(crashpoints.RELAY_ENV):  # fault tests only (pods/crashpoints.py)
            self.relay.after_push = lambda rows: crashpoints.crash_point(
                "after_push", crashpoints.RELAY_ENV)
        #: set while this process holds the pod's relay lock
        self.leading = threading.Event()
        self.identity = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})

    def once(self) -> int:
        """Move every committed row there is now; returns how many."""
        total = 0
        while True:
            n = self.relay.once()
            total += n
            if n < self.relay.batch:
                return total

    def run(self, stop: threading.Event) -> None:
        """Contend for the pod's relay lock; relay while holding it, until `stop`."""
        lock = self.zk.lock(lock_path(self.zk, self.pod_name), self.identity)
        try:
            while not stop.is_set():
                try:
                    got = lock.acquire(timeout=LOCK_WAIT_S)
                except LockTimeout:  # someone else relays this pod
                    continue
                if got:
                    break
            if stop.is_set():
                return
            log.info("relaying the outbox of pod %s", self.pod_name)
            self.leading.set()
            self.relay.run(stop)
        finally:
            self.leading.clear()
            try:
                lock.release()
            except Exception:
                log.warning("could not release the relay lock of pod %s", self.pod_name,
                            exc_info=True)
            self.backend.close()
