"""Private real servers for integration tests: a redis-server and a ZooKeeper of your own.

    with private_redis() as redis_server:        # a redis-server on a free port, own data dir
        podjobs.configure(redis_url=redis_server.address)
        ...
    with private_zookeeper() as zk_server:       # "127.0.0.1:PORT"
        ...

Each starts the podjobs.infra server (the one `podjobs dev up` and podjobs' own test suite
use) on a free loopback port in a fresh temp dir, with PR_SET_PDEATHSIG so it dies with
the process that started it (even on SIGKILL), waits until it answers, and on exit stops
that process by its pid (checked against its private data dir) and deletes the dir.
Never touches a server it did not start. `flush(url)` empties one (FLUSHALL).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from podjobs.backend import RedisBackend
from podjobs.infra.ports import free_port
from podjobs.infra.servers import RedisServer, Server, ZooKeeperServer

READY_TIMEOUT_S = 60.0


@contextlib.contextmanager
def _private(kind: type[Server], prefix: str, base_dir: Path | None,
             ready_timeout: float) -> Iterator[Server]:
    own_dir = base_dir is None
    base = Path(tempfile.mkdtemp(prefix=prefix)) if base_dir is None else Path(base_dir)
    server = kind.in_dir(base, free_port(), die_with_parent=True)
    try:
        server.start()
        server.wait_ready(ready_timeout)
        yield server
    finally:
        try:
            server.stop(timeout=5)
        finally:
            if own_dir:
                shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def private_redis(base_dir: Path | None = None,
                  ready_timeout: float = READY_TIMEOUT_S) -> Iterator[RedisServer]:
    """A private redis-server (see the module docstring); `.address` is its URL."""
    with _private(RedisServer, "podjobs-redis-", base_dir, ready_timeout) as s:
        assert isinstance(s, RedisServer)
        yield s


@contextlib.contextmanager
def private_zookeeper(base_dir: Path | None = None,
                      ready_timeout: float = READY_TIMEOUT_S) -> Iterator[ZooKeeperServer]:
    """A private standalone ZooKeeper (see the module docstring); `.address` is host:port."""
    with _private(ZooKeeperServer, "podjobs-zk-", base_dir, ready_timeout) as s:
        assert isinstance(s, ZooKeeperServer)
        yield s


def flush(redis_url: str) -> None:
    """Empty a Redis you started (FLUSHALL and SCRIPT FLUSH)."""
    backend = RedisBackend(redis_url, check=False)
    try:
        with backend.errors("flush a test Redis"):
            backend.redis.flushall()
            backend.redis.script_flush()
    finally:
        backend.close()
