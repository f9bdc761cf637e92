"""Real servers for the test session, and helpers to reset them between tests.

1. `start_test_servers()` starts the session's servers, chosen by the environment
   variable PODJOBS_TEST_SERVERS:
   - "local" (default): a `podjobs.infra.cluster.Cluster` of 3 pods with MariaDB
     shards (a private mariadbd) in a fresh temp dir named with a random token,
     every process started with `die_with_parent=True` (PR_SET_PDEATHSIG), so
     they die even if pytest is killed with SIGKILL;
   - "containers": testcontainers (one Redis per pod, one MariaDB, one
     ZooKeeper); fails at once with a clear message without a Docker engine.
   Both give a `TestServers` with the same `Topology` and `log_tails()`.
2. `reset_pods(topology)`: FLUSHALL on every pod Redis and drop every table and
   view in every shard database (MySQL/MariaDB or SQLite).
3. `delete_zk_tree(hosts, path)`: remove a ZooKeeper subtree.
4. `ACTIVE`: the servers started in this process, for the failure-report hook.
5. The fixtures and the report hook themselves (tests/conftest.py imports them;
   a pytest run outside tests/ can load them with `-p servers`):
   - `cluster` (session): the `TestServers`; stopped at session end, also on
     Ctrl-C (pytest runs session finalizers) and at interpreter exit;
   - `pods`: the `Topology`, after `reset_pods`;
   - `redis_url`: pod p1's Redis URL, after FLUSHALL;
   - `zk_root`: a fresh unique path "/podjobs-test-<hex>" (not created), whose
     subtree is deleted after the test;
   - `pytest_runtest_makereport`: a failing test that used `cluster` gets the
     last LOG_LINES lines of every server log as report sections.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import socket
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from podjobs.errors import PortInUse
from podjobs.infra.cluster import Cluster
from podjobs.infra.servers import ServerFailed
from podjobs.infra.topofile import Pod, Topology

N_PODS = 3
LOG_LINES = 40
ENV_MODE = "PODJOBS_TEST_SERVERS"
MODES = ("local", "containers")


class TestServers(Protocol):
    """What the `cluster` fixture yields."""

    topology: Topology

    def log_tails(self, n: int = 40) -> dict[str, str]:
        """Server name -> its last `n` log lines."""
        ...

    def close(self) -> None:
        """Stop every server this object started (idempotent)."""
        ...


ACTIVE: list[TestServers] = []


def _port_clash(exc: BaseException) -> bool:
    """A start that failed because a server's port was taken between the kernel's pick and the
    server's bind (by another process starting at the same time, such as the other xdist
    worker's session)."""
    return isinstance(exc, PortInUse) or (
        isinstance(exc, ServerFailed) and "already in use" in str(exc).lower())


class LocalServers:
    """A local `Cluster` in a private temp dir; `close()` stops it and deletes the dir.

    A start that fails on a port clash (`_port_clash`) is made once more, in a new dir on new
    ports; any other failure, or a second clash, is raised."""

    def __init__(self, n_pods: int = N_PODS, db: str = "mysql", attempts: int = 2) -> None:
        atexit.register(self.close)  # belt and braces: finalizers may not run
        for attempt in range(1, attempts + 1):
            token = secrets.token_hex(4)
            self.dir = Path(tempfile.mkdtemp(prefix=f"podjobs-test-{token}-"))
            self.cluster = Cluster(self.dir, die_with_parent=True)
            self._closed = False
            try:
                self.topology = self.cluster.up(n_pods, db=db, timeout=60)
                return
            except BaseException as exc:
                self.close()
                if attempt == attempts or not _port_clash(exc):
                    raise

    def log_tails(self, n: int = 40) -> dict[str, str]:
        tails: dict[str, str] = {}
        for srv in self.cluster.servers():
            tails[f"{srv.kind} {srv.name}"] = srv.log_tail(n)
        return tails

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.cluster.down(timeout=5)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class NoDockerEngine(RuntimeError):
    """PODJOBS_TEST_SERVERS=containers, but no Docker engine answers."""


def _docker_problem() -> str | None:
    """Why Docker cannot be used, or None if its engine answers a ping."""
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:  # any failure means: no usable engine
        return f"{type(exc).__name__}: {exc}"
    return None


class ContainerServers:
    """The same topology from testcontainers (needs a Docker engine)."""

    def __init__(self, n_pods: int = N_PODS) -> None:
        problem = _docker_problem()
        if problem is not None:
            raise NoDockerEngine(
                f"{ENV_MODE}=containers needs a reachable Docker engine "
                f"(DOCKER_HOST={os.environ.get('DOCKER_HOST', 'unset')}): {problem}. "
                f"Start Docker, or unset {ENV_MODE} to use local server processes."
            )
        from testcontainers.community.mysql import MySqlContainer
        from testcontainers.community.redis import RedisContainer
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy

        self.containers: dict[str, Any] = {}
        try:
            zk = (
                DockerContainer("zookeeper:3.8")
                .with_exposed_ports(2181)
                .with_env("ZOO_TICK_TIME", "500")
                .with_env("ZOO_4LW_COMMANDS_WHITELIST", "*")
                .with_env("ZOO_ADMINSERVER_ENABLED", "false")
                .waiting_for(LogMessageWaitStrategy("binding to port"))
            )
            self.containers["zookeeper"] = zk.start()
            mysql = MySqlContainer(
                "mariadb:10.11", dialect="pymysql", username="root", password="podjobs",
                dbname="podjobs",
            )  # fmt: skip
            self.containers["mariadb"] = mysql.start()
            pods = [f"p{i}" for i in range(1, n_pods + 1)]
            for pod in pods:
                self.containers[f"redis {pod}"] = RedisContainer("redis:7").start()
            zk_addr = f"{zk.get_container_host_ip()}:{zk.get_exposed_port(2181)}"
            _wait_zk(zk_addr, 60)
            db_host, db_port = mysql.get_container_host_ip(), mysql.get_exposed_port(3306)
            names = [f"podjobs_{pod}" for pod in pods]
            _mysql_exec(
                f"mysql+pymysql://root:podjobs@{db_host}:{db_port}/",
                [f"CREATE DATABASE IF NOT EXISTS `{n}`" for n in names],
            )
            infos = []
            for pod, name in zip(pods, names, strict=True):
                r = self.containers[f"redis {pod}"]
                infos.append(
                    Pod(
                        name=pod,
                        redis_url=f"redis://{r.get_container_host_ip()}:{r.get_exposed_port(6379)}/0",
                        shard_url=f"mysql+pymysql://root:podjobs@{db_host}:{db_port}/{name}",
                    )
                )
            self.topology = Topology(zookeeper=zk_addr, pods=infos, db="mysql")
        except BaseException:
            self.close()
            raise

    def log_tails(self, n: int = 40) -> dict[str, str]:
        tails: dict[str, str] = {}
        for name, container in self.containers.items():
            with contextlib.suppress(Exception):
                out, err = container.get_logs()
                text = (out + err).decode("utf-8", "replace")
                tails[name] = "\n".join(text.splitlines()[-n:])
        return tails

    def close(self) -> None:
        while self.containers:
            _, container = self.containers.popitem()
            with contextlib.suppress(Exception):
                container.stop()


def start_test_servers(n_pods: int = N_PODS) -> TestServers:
    """Start the session's servers as PODJOBS_TEST_SERVERS says (default: local)."""
    mode = os.environ.get(ENV_MODE, "local").strip().lower() or "local"
    if mode not in MODES:
        raise RuntimeError(f"{ENV_MODE}={mode!r}: expected one of {', '.join(MODES)}")
    servers: TestServers = LocalServers(n_pods) if mode == "local" else ContainerServers(n_pods)
    ACTIVE.append(servers)
    return servers


def stop_test_servers(servers: TestServers) -> None:
    with contextlib.suppress(ValueError):
        ACTIVE.remove(servers)
    servers.close()


# -- resetting state between tests --------------------------------------------------


def _wait_zk(hosts: str, timeout: float) -> None:
    host, _, port = hosts.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 1) as s:
            s.sendall(b"srvr")
            if s.recv(64).startswith(b"Zookeeper version"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"ZooKeeper at {hosts} did not answer within {timeout}s")


def _mysql_connect(url: str) -> Any:
    import pymysql
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return pymysql.connect(
        host=u.host or "127.0.0.1", port=int(u.port or 3306), user=u.username or "root",
        password=u.password or "", database=u.database or None, autocommit=True,
        connect_timeout=5,
    )  # fmt: skip


def _mysql_exec(url: str, statements: list[str]) -> None:
    conn = _mysql_connect(url)
    try:
        with conn.cursor() as cur:
            for stmt in statements:
                cur.execute(stmt)
    finally:
        conn.close()


def drop_all_tables(shard_url: str) -> None:
    """Drop every table and view in a shard (MySQL/MariaDB database or SQLite file)."""
    if shard_url.startswith("sqlite:///"):
        path = shard_url[len("sqlite:///") :]
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute(
                "SELECT type, name FROM sqlite_master "
                "WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'"
            ).fetchall()
            conn.execute("PRAGMA foreign_keys = OFF")
            for kind, name in rows:
                conn.execute(f'DROP {kind.upper()} IF EXISTS "{name}"')
            conn.commit()
        finally:
            conn.close()
        return
    conn = _mysql_connect(shard_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, table_type FROM information_schema.tables "
                "WHERE table_schema = DATABASE()"
            )
            rows = cur.fetchall()
            if not rows:
                return
            views = [f"`{n}`" for n, t in rows if t == "VIEW"]
            tables = [f"`{n}`" for n, t in rows if t != "VIEW"]
            cur.execute("SET FOREIGN_KEY_CHECKS = 0")
            if views:
                cur.execute(f"DROP VIEW IF EXISTS {', '.join(views)}")
            if tables:
                cur.execute(f"DROP TABLE IF EXISTS {', '.join(tables)}")
            cur.execute("SET FOREIGN_KEY_CHECKS = 1")
    finally:
        conn.close()


def flush_redis(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.flushall()
        client.script_flush()
    finally:
        client.close()


def reset_pods(topology: Topology) -> None:
    """FLUSHALL every pod's Redis and drop every table in every shard."""
    for pod in topology.pods:
        flush_redis(pod.redis_url)
        drop_all_tables(pod.shard_url)


def delete_zk_tree(client: Any, path: str) -> None:
    """Delete `path` and everything below it with a connected KazooClient."""
    from kazoo.exceptions import NoNodeError

    with contextlib.suppress(NoNodeError):
        client.delete(path, recursive=True)


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster() -> Iterator[TestServers]:
    """The session's servers: 3 pods, MariaDB shards, ZooKeeper (see module doc)."""
    failure = None
    try:
        servers = start_test_servers()
    except NoDockerEngine as exc:
        failure = str(exc)
    if failure is not None:  # outside the except block: one clean line, no traceback
        pytest.fail(failure, pytrace=False)
    try:
        yield servers
    finally:
        stop_test_servers(servers)


@pytest.fixture
def pods(cluster: TestServers) -> Topology:
    """The topology, with every pod Redis flushed and every shard table dropped."""
    reset_pods(cluster.topology)
    return cluster.topology


@pytest.fixture
def redis_url(cluster: TestServers) -> str:
    """Pod p1's Redis URL, flushed."""
    url = cluster.topology.pods[0].redis_url
    flush_redis(url)
    return url


@pytest.fixture(scope="session")
def _zk_admin(cluster: TestServers) -> Iterator[Any]:
    from kazoo.client import KazooClient

    client = KazooClient(hosts=cluster.topology.zookeeper, timeout=10)
    client.start(timeout=15)
    try:
        yield client
    finally:
        client.stop()
        client.close()


@pytest.fixture
def zk_root(_zk_admin: Any) -> Iterator[str]:
    """A unique ZooKeeper root path for one test, deleted (with its subtree) after it."""
    path = f"/podjobs-test-{uuid.uuid4().hex}"
    try:
        yield path
    finally:
        delete_zk_tree(_zk_admin, path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Append the end of each server log to the report of a failing test that used them."""
    report = yield
    if report.failed and ACTIVE and "cluster" in getattr(item, "fixturenames", ()):
        for servers in ACTIVE:
            with contextlib.suppress(Exception):
                for name, text in servers.log_tails(LOG_LINES).items():
                    if text.strip():
                        report.sections.append((f"{name} log (last {LOG_LINES} lines)", text))
    return report
