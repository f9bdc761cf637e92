"""A Sentinel-managed pod Redis for tests: 1 primary, `replicas` replicas and 3 sentinels, each
on its own free port and data dir under `base`, started with PR_SET_PDEATHSIG and stopped by
pid (infra.servers.Server).

    with SentinelGroup(tmp_path, replicas=1) as g:
        url = g.url                 # redis+sentinel://127.0.0.1:P1,...:P3/pod?db=0
        g.kill9_primary()           # SIGKILL the current primary
        g.wait_failover(old, 30)    # the sentinels name another primary
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import redis

from podjobs.infra import binaries
from podjobs.infra.ports import HOST, free_port, wait_port_closed
from podjobs.infra.servers import RedisServer, Server, _send_recv
from tests.helpers import wait_until

SERVICE = "pod"
DOWN_AFTER_MS = 1000


class ReplicaServer(RedisServer):
    kind = "redis-replica"

    def __init__(self, *a: Any, primary: int, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.primary = primary

    def command(self) -> list[str]:
        return [*super().command(), "--replicaof", HOST, str(self.primary)]


class SentinelServer(Server):
    kind = "redis-sentinel"

    def __init__(self, *a: Any, primary: int, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.primary = primary

    @property
    def conf(self) -> Path:
        return self.data_dir / "sentinel.conf"

    def prepare(self) -> None:
        super().prepare()
        if not self.conf.exists():  # the sentinel rewrites it with what it learns
            self.conf.write_text(
                f"port {self.port}\nbind {HOST}\nprotected-mode no\ndaemonize no\n"
                f"dir {self.data_dir}\nlogfile \"\"\n"
                f"sentinel monitor {SERVICE} {HOST} {self.primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n")

    def command(self) -> list[str]:
        exe = binaries.find_binary("redis-server", self.search_path)
        return [str(exe), str(self.conf), "--sentinel"]

    def marker(self) -> str:
        return str(self.conf)

    def probe(self) -> bool:
        return _send_recv(self.port, b"PING\r\n").startswith(b"+PONG")

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


class SentinelGroup:
    def __init__(self, base: Path, replicas: int = 1, sentinels: int = 3) -> None:
        self.base = base
        used: set[int] = set()

        def port() -> int:
            p = free_port(avoid=used)
            used.add(p)
            return p

        self.data: list[Server] = []
        self.sentinels: list[SentinelServer] = []
        try:
            primary = RedisServer.in_dir(base / "primary", port(), name="primary",
                                         die_with_parent=True)
            self.data.append(primary)
            for i in range(replicas):
                self.data.append(ReplicaServer.in_dir(base / f"replica{i}", port(),
                                                      name=f"replica{i}", die_with_parent=True,
                                                      primary=primary.port))
            for i in range(sentinels):
                self.sentinels.append(SentinelServer.in_dir(
                    base / f"sentinel{i}", port(), name=f"sentinel{i}", die_with_parent=True,
                    primary=primary.port))
            for s in [*self.data, *self.sentinels]:
                s.start()
            for s in [*self.data, *self.sentinels]:
                s.wait_ready(20)
            wait_until(lambda: all(self._knows(s, replicas, sentinels - 1)
                                   for s in self.sentinels), 30,
                       "every sentinel to know the replicas and the other sentinels")
            # a replica the sentinels know may still wait for its first full sync (Redis
            # delays a diskless sync by repl-diskless-sync-delay, 5 s): promoted then, it
            # would come up empty. Start only with every replica's link up.
            wait_until(lambda: all(self._synced(s) for s in self.data[1:]), 30,
                       "every replica to finish its first sync with the primary")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> SentinelGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _ask(s: SentinelServer) -> redis.Redis:
        return redis.Redis(host=HOST, port=s.port, socket_timeout=2, decode_responses=True)

    def _knows(self, s: SentinelServer, replicas: int, others: int) -> bool:
        with contextlib.closing(self._ask(s)) as r:
            info = r.execute_command("SENTINEL", "MASTER", SERVICE)  # type: ignore[no-untyped-call]
        d = dict(zip(info[::2], info[1::2], strict=False)) if isinstance(info, list) else info
        return int(d["num-slaves"]) >= replicas and int(d["num-other-sentinels"]) >= others

    @staticmethod
    def _synced(s: Server) -> bool:
        with contextlib.closing(redis.Redis(host=HOST, port=s.port, socket_timeout=2,
                                            decode_responses=True)) as r:
            info = r.info("replication")
        return info.get("master_link_status") == "up" and not info.get("master_sync_in_progress")

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}?db=0"

    def primary_port(self) -> int:
        """The primary's port as the first sentinel that answers names it."""
        for s in self.sentinels:
            with contextlib.suppress(redis.RedisError), contextlib.closing(self._ask(s)) as r:
                host, port = r.execute_command(  # type: ignore[no-untyped-call]
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                return int(port)
        raise RuntimeError("no sentinel answers")

    def primary_url(self) -> str:
        return f"redis://{HOST}:{self.primary_port()}/0"

    def server_on(self, port: int) -> Server:
        return next(s for s in self.data if s.port == port)

    def kill9_primary(self) -> int:
        """SIGKILL the current primary; returns its port."""
        srv = self.server_on(self.primary_port())
        pid = srv.pid
        if pid is not None and srv.owns(pid):
            os.kill(pid, signal.SIGKILL)
            srv._wait_gone(pid, 10)  # noqa: SLF001 - infra's own wait for a pid
        wait_port_closed(srv.port, 5)
        return srv.port

    def wait_failover(self, old_port: int, timeout: float) -> int:
        """Until the sentinels name a primary other than `old_port` and it takes writes."""
        def moved() -> bool:
            try:
                port = self.primary_port()
            except RuntimeError:
                return False
            if port == old_port:
                return False
            with contextlib.suppress(redis.RedisError), contextlib.closing(
                    redis.Redis(host=HOST, port=port, socket_timeout=2)) as r:
                return r.info("replication").get("role") == "master"
            return False

        wait_until(moved, timeout, "the sentinels to promote a replica")
        return self.primary_port()

    def close(self) -> None:
        for s in [*self.sentinels, *self.data]:
            s.terminate()
        for s in [*self.sentinels, *self.data]:
            with contextlib.suppress(Exception):
                s.stop(5)
