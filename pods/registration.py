"""Live workers in ZooKeeper: one ephemeral node per worker process.

1. `WorkerRegistration(zk, pod, worker_id, info)`: `start()` creates the
   ephemeral node workers/{pod}/{worker_id} holding JSON
   {"pod", "worker_id", "host", "pid", "started", ...info} (info carries
   "queues", "concurrency" and anything else the worker wants to show).
2. The node lives as long as the ZooKeeper session: if the worker dies or is
   cut off longer than the session timeout, ZooKeeper deletes it. When kazoo
   reconnects, the registration re-creates it (in its own thread: listeners
   must not block); `registrations` counts successful creates and
   `wait_registered(n, timeout)` waits for the n-th.
3. `stop()` deletes the node and stops listening.
4. `fleet(zk)`: live workers per pod, {pod: [info, ...]} sorted by worker id.

Registration states:

    NEW --start()--> REGISTERED (node created under the current session)
    REGISTERED --SUSPENDED--> REGISTERED (node kept while the session lives)
    REGISTERED --LOST (session expired: ZooKeeper deleted the node)--> LOST
    LOST or REGISTERED --CONNECTED--> check the node, re-create it if missing
        --> REGISTERED
    any --stop()--> STOPPED (node deleted if the session still holds it)

A node with the same id held by another live session is never deleted: that
is a second worker with the same id; `start()` refuses, a re-create logs it.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from typing import Any

from podjobs.errors import ConfigurationError

from .topology import CAS_ATTEMPTS, TopologyConflict, validate_name
from .zk import ZK, ConnState, KazooException, NodeExistsError

log = logging.getLogger(__name__)

WORKERS = "workers"
# Worker ids are ZooKeeper node names: no '/', no whitespace or control characters.
_WORKER_ID = re.compile(r"[^/\s\x00-\x1f\x7f]{1,255}")


def validate_worker_id(worker_id: str) -> str:
    """`worker_id` if usable as a node name (the core's "host:pid:token" is), else
    `ConfigurationError`."""
    if (
        not isinstance(worker_id, str)
        or not _WORKER_ID.fullmatch(worker_id)
        or worker_id in (".", "..")
    ):
        raise ConfigurationError(
            f"worker id {worker_id!r} is invalid: use 1-255 characters without '/', "
            f"spaces or control characters (and not '.' or '..')"
        )
    return worker_id


class WorkerRegistration:
    """The ephemeral node announcing one live worker (see module doc)."""

    def __init__(
        self, zk: ZK, pod: str, worker_id: str, info: dict[str, Any] | None = None
    ) -> None:
        self.zk = zk
        self.pod = validate_name("pod", pod)
        self.worker_id = validate_worker_id(worker_id)
        self.info: dict[str, Any] = {
            "pod": pod,
            "worker_id": worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
            **(info or {}),
        }
        self.path = zk.path(WORKERS, pod, worker_id)
        self._cond = threading.Condition()
        self._registrations = 0
        self._running = False

    def __repr__(self) -> str:
        return f"WorkerRegistration({self.path!r}, registrations={self._registrations})"

    @property
    def registrations(self) -> int:
        """How many times the node was created (1 after start, +1 per re-create)."""
        return self._registrations

    def start(self) -> WorkerRegistration:
        """Create the node; `ConfigurationError` if another live session holds this id."""
        with self._cond:
            if self._running:
                return self
            self._running = True
        try:
            if not self._ensure():
                raise ConfigurationError(
                    f"worker {self.worker_id!r} of pod {self.pod!r} is already registered by "
                    f"another live ZooKeeper session ({self.path}); give each worker its own id"
                )
        except BaseException:
            with self._cond:
                self._running = False
            raise
        self.zk.add_listener(self._on_state)
        return self

    def stop(self) -> None:
        """Delete the node (if this session holds it) and stop re-creating it."""
        with self._cond:
            if not self._running:
                return
            self._running = False
            self._cond.notify_all()
        self.zk.remove_listener(self._on_state)
        try:
            stat = self.zk.stat(self.path)
            if stat is not None and stat.ephemeral_owner == self.zk.session_id:
                self.zk.delete(self.path, version=stat.version)
        except KazooException:
            log.warning("could not delete %s; ZooKeeper drops it with the session", self.path)

    def wait_registered(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until the node was created `count` times in all; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._registrations >= count, timeout)

    def _ensure(self) -> bool:
        """Create the node if missing; False if another session holds it."""
        for _ in range(CAS_ATTEMPTS):
            with self._cond:
                if not self._running:
                    return True  # stopped meanwhile: do not register again
            stat = self.zk.stat(self.path)
            if stat is not None:
                return stat.ephemeral_owner == self.zk.session_id
            try:
                self.zk.create_json(self.path, self.info, ephemeral=True)
            except NodeExistsError:
                continue  # created meanwhile: look at whose it is
            with self._cond:
                self._registrations += 1
                self._cond.notify_all()
            log.info("registered worker %s", self.path)
            return True
        raise TopologyConflict(f"{self.path} kept appearing and vanishing; try again")

    def _on_state(self, state: ConnState) -> None:
        # Kazoo's connection thread: never block here.
        # Checked on every CONNECTED, not only after LOST: a LOST can be missed
        # (it is reported once, and only if kazoo saw the expiry).
        if state == ConnState.CONNECTED:
            threading.Thread(
                target=self._recreate, name=f"register-{self.worker_id}", daemon=True
            ).start()

    def _recreate(self) -> None:
        with self._cond:
            if not self._running:
                return
        try:
            ok = self._ensure()
        except Exception as exc:  # a thread of its own: log, never die silently
            # Typically the connection went again: the next CONNECTED tries once more.
            log.warning("could not re-register %s: %r", self.path, exc)
            return
        if not ok:
            log.error(
                "%s is held by another live session: a second worker with id %r?",
                self.path,
                self.worker_id,
            )


def fleet(zk: ZK) -> dict[str, list[dict[str, Any]]]:
    """Live workers per pod: {pod: [info, ...]}, pods and workers sorted."""
    out: dict[str, list[dict[str, Any]]] = {}
    for pod in zk.children(zk.path(WORKERS)):
        ids = zk.children(zk.path(WORKERS, pod))
        got = zk.get_many_json(zk.path(WORKERS, pod, w) for w in ids)
        workers = []
        for w in ids:
            item = got.get(zk.path(WORKERS, pod, w))
            if isinstance(item, tuple):
                workers.append({"worker_id": w, "pod": pod, **item[0]})
            elif isinstance(item, ValueError):
                log.warning("skipping worker %s/%s: %s", pod, w, item)
        if workers:
            out[pod] = workers
    return out
