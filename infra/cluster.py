"""A local podjobs cluster in one directory: ZooKeeper, a Redis per pod, a shard per pod.

1. `Cluster(dir).up(n_pods, db)` starts one ZooKeeper and one redis-server per
   pod (p1..pN) and gives each pod a database shard:
   - "sqlite" (default): a file DIR/shards/<pod>.sqlite3;
   - "mysql": a private mariadbd started here, one database podjobs_<pod> each;
   - "mysql" with `mysql_url`: databases <prefix>_<pod> created on an existing
     server (prefix = the URL's database, default "podjobs"); nothing started.
   With `backend="sql"` no redis-server is started at all: each pod keeps its
   queue in tables on its own shard (podjobs.sqlbackend; `Pod.backend` "sql").
   `up` is idempotent: servers recorded in DIR/state.json that still run are
   kept, missing ones are (re)started on their recorded ports, pods can be added.
   It checks binaries and ports before spawning anything, waits until every
   server answers, then writes DIR/topology.json and DIR/state.json.
2. `status()` lists each recorded server: kind, name, pid, port, running, log.
3. `down()` stops exactly the recorded processes (pid file + cmdline check) and
   removes the state; data stays unless `purge=True`.
4. `up(n_pods, db, dir, ...)` is the one-call form returning the `Cluster`.

Layout: DIR/zookeeper/{conf,data,zookeeper.log,zookeeper.pid}, DIR/redis/<pod>/...,
DIR/mariadb/..., DIR/shards/, DIR/state.json, DIR/topology.json.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from podjobs.errors import ConfigurationError

from . import binaries
from .ports import HOST, check_port_free, free_port
from .servers import SERVER_KINDS, Server, ServerFailed, ZooKeeperServer
from .topofile import Pod, Topology

STATE_VERSION = 1
DB_KINDS = ("sqlite", "mysql")
#: where the pods keep their queues: a redis-server each, or tables on their shard
BACKENDS = ("redis", "sql")
_DB_NAME = re.compile(r"[A-Za-z0-9_]{1,48}")


@dataclass(frozen=True)
class ServerStatus:
    """One recorded server as `status()` sees it."""

    kind: str
    name: str
    pid: int | None
    port: int
    running: bool
    log_file: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pod_names(n_pods: int) -> list[str]:
    return [f"p{i}" for i in range(1, n_pods + 1)]


def _mysql_url_parts(mysql_url: str) -> tuple[Any, str]:
    """(SQLAlchemy URL, database prefix) from a user-given MySQL URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(mysql_url)
    except ArgumentError as exc:
        raise ConfigurationError(f"--mysql-url {mysql_url!r} is not a database URL") from exc
    if url.get_backend_name() not in ("mysql", "mariadb"):
        raise ConfigurationError(
            f"--mysql-url must be a MySQL/MariaDB URL such as "
            f"'mysql+pymysql://root@127.0.0.1:3306/podjobs', not {url.get_backend_name()!r}"
        )
    prefix = url.database or "podjobs"
    if not _DB_NAME.fullmatch(prefix):
        raise ConfigurationError(
            f"database prefix {prefix!r} in --mysql-url may only use letters, digits and _"
        )
    return url, prefix


def _create_mysql_databases(url: Any, names: list[str]) -> None:
    """CREATE DATABASE IF NOT EXISTS for each name on the server `url` points at."""
    import pymysql

    kwargs: dict[str, Any] = {
        "host": url.host or HOST,
        "port": int(url.port or 3306),
        "user": url.username or "root",
        "password": url.password or "",
        "autocommit": True,
        "connect_timeout": 5,
    }
    if "unix_socket" in url.query:
        kwargs["unix_socket"] = url.query["unix_socket"]
    try:
        conn = pymysql.connect(**kwargs)
    except pymysql.MySQLError as exc:
        raise ConfigurationError(
            f"cannot connect to MySQL at {kwargs['host']}:{kwargs['port']} as "
            f"{kwargs['user']!r}: {exc}"
        ) from exc
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{name}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
    finally:
        conn.close()


class Cluster:
    """The servers of one local cluster directory (see the module docstring)."""

    def __init__(
        self,
        dir: str | os.PathLike[str],
        *,
        die_with_parent: bool = False,
        search_path: str | None = None,
        java_lib: Path | None = None,
    ) -> None:
        self.dir = Path(dir).absolute()
        self.die_with_parent = die_with_parent
        self.search_path = search_path
        self.java_lib = java_lib
        # Seconds each server took to answer in the last up() (started ones only).
        self.timings: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"Cluster('{self.dir}')"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def topology_file(self) -> Path:
        return self.dir / "topology.json"

    # -- state ------------------------------------------------------------------

    def load_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f"{self.state_file} is corrupt ({exc}); stop its servers by hand and delete it"
            ) from exc
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ConfigurationError(f"{self.state_file} has an unknown format")
        return data

    def _write_json(self, path: Path, data: dict[str, Any]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)

    def _server_from_record(self, rec: dict[str, Any]) -> Server:
        cls = SERVER_KINDS[rec["kind"]]
        extra: dict[str, Any] = {"java_lib": self.java_lib} if cls is ZooKeeperServer else {}
        return cls(
            int(rec["port"]),
            Path(rec["data_dir"]),
            Path(rec["log_file"]),
            Path(rec["pid_file"]),
            name=str(rec["name"]),
            die_with_parent=self.die_with_parent,
            search_path=self.search_path,
            **extra,
        )

    @staticmethod
    def _record(server: Server) -> dict[str, Any]:
        return {
            "kind": server.kind,
            "name": server.name,
            "port": server.port,
            "pid": server.pid,
            "data_dir": str(server.data_dir),
            "log_file": str(server.log_file),
            "pid_file": str(server.pid_file),
        }

    def servers(self) -> list[Server]:
        """The recorded servers (ZooKeeper, MariaDB if any, then Redis per pod)."""
        state = self.load_state()
        return [self._server_from_record(r) for r in state["servers"]] if state else []

    def topology(self) -> Topology:
        return Topology.load(self.topology_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- up -----------------------------------------------------------------------

    def up(
        self,
        n_pods: int,
        db: str | None = None,
        mysql_url: str | None = None,
        base_port: int | None = None,
        timeout: float = 60.0,
        backend: str | None = None,
    ) -> Topology:
        """Start what is missing, wait for everything, write topology.json; see module doc."""
        if backend is not None and backend not in BACKENDS:
            raise ConfigurationError(
                f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if n_pods < 1:
            raise ConfigurationError(f"--pods must be at least 1, not {n_pods}")
        if db is not None and db not in DB_KINDS:
            raise ConfigurationError(f"--db must be one of {', '.join(DB_KINDS)}, not {db!r}")
        if mysql_url and db not in (None, "mysql"):
            raise ConfigurationError("--mysql-url needs --db mysql (or leave --db out)")
        if base_port is not None and not 0 < base_port < 65536 - (n_pods + 2):
            raise ConfigurationError(f"--base-port {base_port} leaves no room for {n_pods} pods")
        with self._locked():
            state = self.load_state()
            if db is None and mysql_url is None and state is not None:
                # A plain re-up keeps what the directory was started with.
                db, mysql_url = state["db"], state.get("mysql_url")
            if backend is None:
                backend = str(state.get("backend", "redis")) if state is not None else "redis"
            if db is None:
                db = "mysql" if mysql_url else "sqlite"
            return self._up(state, n_pods, db, mysql_url, base_port, timeout, backend)

    def _up(
        self,
        state: dict[str, Any] | None,
        n_pods: int,
        db: str,
        mysql_url: str | None,
        base_port: int | None,
        timeout: float,
        backend: str = "redis",
    ) -> Topology:
        external = _mysql_url_parts(mysql_url) if mysql_url else None
        pods = pod_names(n_pods)
        if state is not None:
            if state["db"] != db or state.get("mysql_url") != mysql_url:
                where = f" at {state['mysql_url']}" if state.get("mysql_url") else ""
                raise ConfigurationError(
                    f"{self.dir} already holds a cluster with db={state['db']}{where}; "
                    f"run 'podjobs dev down --dir {self.dir}' first to change it"
                )
            if state.get("backend", "redis") != backend:
                raise ConfigurationError(
                    f"{self.dir} already holds a cluster with --backend "
                    f"{state.get('backend', 'redis')}; run 'podjobs dev down --dir {self.dir}' "
                    f"first to change it"
                )
            if len(state["pods"]) > n_pods:
                raise ConfigurationError(
                    f"{self.dir} already holds {len(state['pods'])} pods; ask for at least "
                    f"that many or run 'podjobs dev down --dir {self.dir}' first"
                )
        private_mysql = db == "mysql" and external is None

        # Check every binary before starting anything.
        needed = ["java", "zookeeper.jar"]
        if backend == "redis":
            needed.insert(0, "redis-server")
        if private_mysql:
            needed += ["mariadb-install-db", "mariadbd"]
        binaries.require(needed, self.search_path, self.java_lib)

        known: dict[tuple[str, str], Server] = {}
        if state is not None:
            for rec in state["servers"]:
                srv = self._server_from_record(rec)
                known[(srv.kind, srv.name)] = srv
        used = {s.port for s in known.values()}

        def port_for(offset: int) -> int:
            if base_port is not None:
                port = base_port + offset
                if port in used:
                    raise ConfigurationError(
                        f"port {port} from --base-port {base_port} is already used by this "
                        f"cluster; pick another --base-port"
                    )
            else:
                port = free_port(avoid=used)
            used.add(port)
            return port

        def get(kind: str, name: str, offset: int, base: Path) -> Server:
            srv = known.get((kind, name))
            if srv is None:
                extra: dict[str, Any] = {"java_lib": self.java_lib} if kind == "zookeeper" else {}
                srv = SERVER_KINDS[kind].in_dir(
                    base, port_for(offset), name=name, die_with_parent=self.die_with_parent,
                    search_path=self.search_path, **extra,
                )  # fmt: skip
            return srv

        zk = get("zookeeper", "zookeeper", 0, self.dir / "zookeeper")
        mariadb = get("mariadb", "mariadb", 1, self.dir / "mariadb") if private_mysql else None
        redis = ([get("redis", p, 1 + i, self.dir / "redis" / p) for i, p in enumerate(pods, 1)]
                 if backend == "redis" else [])
        servers: list[Server] = [zk, *([mariadb] if mariadb else []), *redis]

        to_start = [s for s in servers if not s.is_running()]
        for srv in to_start:
            check_port_free(srv.port, f"{srv.kind} {srv.name}")

        started: list[Server] = []
        t0 = time.monotonic()
        spawned_at: dict[str, float] = {}
        self.timings = {}
        try:
            # The JVM is slowest: spawn it first, then redis, then install/spawn MariaDB
            # while the others boot. All spawns happen in this thread (see PDEATHSIG).
            order = sorted(to_start, key=lambda s: {"zookeeper": 0, "redis": 1}.get(s.kind, 2))
            for srv in order:
                spawned_at[f"{srv.kind} {srv.name}"] = time.monotonic()
                srv.start()
                started.append(srv)
            self._write_state(db, mysql_url, pods, servers, None, backend)
            deadline = t0 + timeout
            for srv in servers:
                srv.wait_ready(max(1.0, deadline - time.monotonic()))
                key = f"{srv.kind} {srv.name}"
                if key in spawned_at:
                    self.timings[key] = time.monotonic() - spawned_at[key]
            topology = self._make_shards(db, pods, zk, mariadb, redis, external, backend)
        except BaseException:
            for srv in started:
                with contextlib.suppress(Exception):
                    srv.stop(timeout=5)
            if state is None:
                with contextlib.suppress(FileNotFoundError):
                    self.state_file.unlink()
            else:  # back to what was recorded before this call
                self._write_json(self.state_file, state)
            raise
        self._write_state(db, mysql_url, pods, servers, topology, backend)
        topology.save(self.topology_file)
        return topology

    def _make_shards(
        self,
        db: str,
        pods: list[str],
        zk: Server,
        mariadb: Server | None,
        redis: list[Server],
        external: tuple[Any, str] | None,
        backend: str = "redis",
    ) -> Topology:
        shard_urls: list[str] = []
        if db == "sqlite":
            shards = self.dir / "shards"
            shards.mkdir(parents=True, exist_ok=True)
            for pod in pods:
                path = shards / f"{pod}.sqlite3"
                path.touch(exist_ok=True)
                shard_urls.append(f"sqlite:///{path}")
        elif mariadb is not None:
            from sqlalchemy.engine import make_url

            names = [f"podjobs_{pod}" for pod in pods]
            _create_mysql_databases(make_url(mariadb.address), names)
            shard_urls = [f"mysql+pymysql://root@{HOST}:{mariadb.port}/{n}" for n in names]
        else:
            assert external is not None
            url, prefix = external
            names = [f"{prefix}_{pod}" for pod in pods]
            _create_mysql_databases(url, names)
            shard_urls = [url.set(database=n).render_as_string(hide_password=False) for n in names]
        if backend == "sql":  # the queue is in the shard itself: no Redis URL
            members = [Pod(name=p, redis_url="", shard_url=u, backend="sql")
                       for p, u in zip(pods, shard_urls, strict=True)]
        else:
            members = [Pod(name=p, redis_url=r.address, shard_url=u)
                       for p, r, u in zip(pods, redis, shard_urls, strict=True)]
        return Topology(zookeeper=zk.address, pods=members, db=db)

    def _write_state(
        self,
        db: str,
        mysql_url: str | None,
        pods: list[str],
        servers: list[Server],
        topology: Topology | None,
        backend: str = "redis",
    ) -> None:
        self._write_json(
            self.state_file,
            {
                "version": STATE_VERSION,
                "dir": str(self.dir),
                "db": db,
                "mysql_url": mysql_url,
                "backend": backend,
                "pods": pods,
                "servers": [self._record(s) for s in servers],
                "topology": topology.to_dict() if topology else None,
            },
        )

    # -- status / down ----------------------------------------------------------

    def status(self) -> list[ServerStatus]:
        """Every recorded server, running or not ([] when nothing is recorded)."""
        return [
            ServerStatus(
                kind=s.kind,
                name=s.name,
                pid=s.pid,
                port=s.port,
                running=s.is_running(),
                log_file=str(s.log_file),
            )
            for s in self.servers()
        ]

    def down(self, purge: bool = False, timeout: float = 10.0) -> list[ServerStatus]:
        """Stop the recorded servers (ours only), remove the state; returns what was stopped."""
        with self._locked():
            stopped: list[ServerStatus] = []
            servers = self.servers()
            # SIGTERM all first so they shut down in parallel, then wait for each.
            pids = {id(srv): srv.terminate() for srv in servers}
            for srv in servers:
                pid = pids[id(srv)]
                srv.stop(timeout=timeout)
                if pid is not None:
                    stopped.append(
                        ServerStatus(srv.kind, srv.name, pid, srv.port, False, str(srv.log_file))
                    )
            for path in (self.state_file, self.topology_file):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            if purge:
                for sub in ("zookeeper", "redis", "mariadb", "shards"):
                    shutil.rmtree(self.dir / sub, ignore_errors=True)
            return stopped


def up(
    n_pods: int,
    db: str | None = None,
    dir: str | os.PathLike[str] = "var",
    mysql_url: str | None = None,
    base_port: int | None = None,
    *,
    die_with_parent: bool = False,
    search_path: str | None = None,
    timeout: float = 60.0,
    backend: str | None = None,
) -> Cluster:
    """Start (or keep) a cluster in `dir` and return it; see `Cluster.up`."""
    cluster = Cluster(dir, die_with_parent=die_with_parent, search_path=search_path)
    cluster.up(n_pods, db=db, mysql_url=mysql_url, base_port=base_port, timeout=timeout,
               backend=backend)
    return cluster


__all__ = ["Cluster", "ServerFailed", "ServerStatus", "pod_names", "up"]
