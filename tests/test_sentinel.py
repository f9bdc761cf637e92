"""A pod's Redis behind Sentinel: every connection follows a failover (issue 17 item 5).

Before the fix, a connection that reconnected by itself (the script connection each thread
keeps, a retry inside a read) went back to the address it had: after the primary was killed,
workers, the enqueuer and the poller kept failing with 'Error 111 connecting to' the dead
primary's port for as long as they ran (the chaos scenario lost 220 of 299 jobs). Real
servers: 1 primary, 1 replica, 3 sentinels (tests/chaos/sentinel.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from podjobs.backend import RedisBackend
from podjobs.errors import PodjobsError
from podjobs.fairshare import ready_count
from podjobs.payload import encode
from tests.chaos.sentinel import SentinelGroup
from tests.helpers import wait_until


def _payload(i: int) -> str:
    return encode({"id": f"01SENTINEL{i:016d}", "job": "x.y", "args": [], "kwargs": {},
                   "queue": "default", "attempt": 1, "enqueued_at": 0})


@pytest.fixture
def group(tmp_path: Path):  # type: ignore[no-untyped-def]
    with SentinelGroup(tmp_path / "sentinel", replicas=1) as g:
        yield g


def _enqueue_until_ok(backend: RedisBackend, i: int) -> None:
    """Enqueue until it is acknowledged (during the failover it may be refused)."""
    def ok() -> bool:
        try:
            backend.enqueue("default", [_payload(i)])
            return True
        except PodjobsError:
            return False
    wait_until(ok, 30, "an enqueue to be acknowledged after the failover")


def test_every_connection_follows_a_failover(group: SentinelGroup) -> None:
    backend = RedisBackend(group.url, socket_timeout=2, connect_timeout=1)
    try:
        # the script connection of this thread and of a second one, and the read pool: in use
        backend.enqueue("default", [_payload(0)])
        other = threading.Thread(target=backend.enqueue, args=("default", [_payload(1)]))
        other.start()
        other.join()
        with backend.errors("read"):
            assert ready_count(backend.redis, "default") == 2
        wait_until(lambda: all(group._synced(s) for s in group.data[1:]), 10,  # noqa: SLF001
                   "the replica to have both jobs")

        old = group.kill9_primary()
        new = group.wait_failover(old, 30)
        assert new != old

        # the kept script connection reaches the new primary (before: refused forever)
        _enqueue_until_ok(backend, 2)
        # and a read: its first attempt after the failover goes to the new primary
        with backend.errors("read"):
            assert ready_count(backend.redis, "default") == 3
        assert backend.redis.connection_pool.get_master_address()[1] == new
    finally:
        backend.close()
