"""Section 1 of `make demo` (demo/run.py): every server of the cluster answers."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
import sqlalchemy

from demo.common import DemoFailed
from podjobs.infra.topofile import Topology


def check(what: str, target: str, probe: Callable[[], str]) -> None:
    """Run one probe and print one line; DemoFailed if it raises."""
    t = time.perf_counter()
    try:
        result = probe()
    except Exception as exc:
        print(f"  FAIL  {what:<16} {target}: {type(exc).__name__}: {exc}")
        raise DemoFailed(f"{what} at {target} does not answer: {exc}") from exc
    ms = (time.perf_counter() - t) * 1000
    print(f"  ok    {what:<16} {target:<48} {result} ({ms:.0f} ms)")


def check_servers(topology: Topology) -> None:
    from kazoo.client import KazooClient

    for pod in topology.pods:
        def ping(url: str = pod.redis_url) -> str:
            r = redis.Redis.from_url(url, socket_timeout=5)
            try:
                return "PING -> PONG" if r.ping() else "PING -> ?"
            finally:
                r.close()

        check(f"redis {pod.name}", pod.redis_url, ping)
    for pod in topology.pods:
        def select_1(url: str = pod.shard_url) -> str:
            engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
            try:
                with engine.connect() as conn:
                    one = conn.execute(sqlalchemy.text("SELECT 1")).scalar()
            finally:
                engine.dispose()
            if one != 1:
                raise DemoFailed(f"SELECT 1 returned {one!r}")
            return "SELECT 1 -> 1"

        check(f"shard {pod.name}", pod.shard_url.split("://", 1)[-1], select_1)

    def list_root() -> str:
        zk = KazooClient(hosts=topology.zookeeper, timeout=5)
        zk.start(timeout=10)
        try:
            children = sorted(zk.get_children("/"))
        finally:
            zk.stop()
            zk.close()
        return f"ls / -> {children}"

    check("zookeeper", topology.zookeeper, list_root)
