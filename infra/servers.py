"""One local server process each: `RedisServer`, `ZooKeeperServer`, `MariaDBServer`.

Every server has a port, a private data dir, a log file and a pid file, and:

1. `start()` writes its config, checks the port is free (`PortInUse`), spawns the
   program in its own session with output appended to the log file, and writes
   the pid file. With `die_with_parent=True` the child also gets
   PR_SET_PDEATHSIG (Linux prctl), so it is killed if the process that started
   it dies, even by SIGKILL. The signal follows the *thread* that spawned the
   child: spawn from a thread that outlives the server (the main thread).
2. `wait_ready(timeout)` polls until the server answers (redis PING, ZooKeeper
   `srvr`, MariaDB login + SELECT 1); if the process exits or the time runs out
   it raises `ServerFailed` with the end of the log.
3. `stop()` signals the pid from the pid file, but only after checking that
   /proc/PID/cmdline still names this server's private path, so a recycled pid
   or a system server is never touched: SIGTERM, then SIGKILL after a bound.
4. `is_running()`, `pid`, `log_tail(n)` and `address` for status and reports.

`MariaDBServer.prepare()` runs mariadb-install-db once into a temp dir, then
renames it, so an interrupted install never leaves a half-made data dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from podjobs.errors import ConfigurationError, PodjobsError

from . import binaries
from .ports import HOST, check_port_free
from .procs import CHILDREN, pdeathsig_preexec, pid_alive, read_cmdline, tail_lines

# Unix socket paths are limited to 108 bytes including the NUL.
_MAX_SOCKET_PATH = 100


class ServerFailed(PodjobsError):  # type: ignore[misc,unused-ignore]
    """A server exited during start-up or did not answer in time."""


class Server(ABC):
    """A server process with a port, data dir, log file and pid file."""

    kind: ClassVar[str]

    def __init__(
        self,
        port: int,
        data_dir: Path,
        log_file: Path,
        pid_file: Path,
        *,
        name: str | None = None,
        die_with_parent: bool = False,
        search_path: str | None = None,
    ) -> None:
        self.port = port
        self.data_dir = Path(data_dir).absolute()
        self.log_file = Path(log_file).absolute()
        self.pid_file = Path(pid_file).absolute()
        self.name = name or self.kind
        self.die_with_parent = die_with_parent
        self.search_path = search_path

    @classmethod
    def in_dir(cls, base_dir: Path, port: int, **kwargs: Any) -> Server:
        """The standard layout: BASE/data, BASE/<kind>.log, BASE/<kind>.pid."""
        base = Path(base_dir).absolute()
        return cls(
            port,
            base / "data",
            base / f"{cls.kind}.log",
            base / f"{cls.kind}.pid",
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, port={self.port}, data_dir='{self.data_dir}')"

    # -- what each kind defines -------------------------------------------------

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that runs the server in the foreground."""

    @abstractmethod
    def marker(self) -> str:
        """A string only this server's /proc/PID/cmdline contains (a private path)."""

    @abstractmethod
    def probe(self) -> bool:
        """One quick check that the server answers requests."""

    @property
    @abstractmethod
    def address(self) -> str:
        """How clients reach it: a URL or host:port."""

    def prepare(self) -> None:
        """Create dirs and config files (idempotent)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)

    # -- process handling -------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The pid recorded in the pid file, if any."""
        try:
            text = self.pid_file.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def owns(self, pid: int) -> bool:
        """True if `pid` is a live process running this server."""
        if not pid_alive(pid):
            return False
        cmdline = read_cmdline(pid)
        return cmdline is not None and self.marker() in cmdline

    def is_running(self) -> bool:
        pid = self.pid
        return pid is not None and self.owns(pid)

    def start(self) -> int:
        """Spawn the server (no-op if it already runs); returns its pid."""
        pid = self.pid
        if pid is not None and self.owns(pid):
            return pid
        check_port_free(self.port, f"{self.kind} {self.name}")
        self.prepare()
        argv = self.command()
        preexec = pdeathsig_preexec(signal.SIGKILL) if self.die_with_parent else None
        with self.log_file.open("ab") as log:
            log.write(f"\n--- podjobs: starting {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=preexec,
                close_fds=True,
            )
        CHILDREN[proc.pid] = proc
        tmp = self.pid_file.with_suffix(".pid.tmp")
        tmp.write_text(f"{proc.pid}\n")
        tmp.replace(self.pid_file)
        return proc.pid

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Poll until the server answers; returns the seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            pid = self.pid
            if pid is None or not pid_alive(pid):
                raise ServerFailed(
                    f"{self.kind} {self.name} (port {self.port}) exited during start-up; "
                    f"end of {self.log_file}:\n{self.log_tail(20)}"
                )
            if self.probe():
                return time.monotonic() - started
            if time.monotonic() >= deadline:
                raise ServerFailed(
                    f"{self.kind} {self.name} (pid {pid}, port {self.port}) did not answer "
                    f"within {timeout:.0f}s; end of {self.log_file}:\n{self.log_tail(20)}"
                )
            time.sleep(0.03)

    def terminate(self) -> int | None:
        """Send SIGTERM if the recorded process is ours; returns its pid (None if not running).

        Lets a caller stop several servers at once: `terminate()` each, then
        `stop()` each (which then only waits, and escalates to SIGKILL).
        """
        pid = self.pid
        if pid is None or not self.owns(pid):
            return None
        self._signal(pid, signal.SIGTERM)
        return pid

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the recorded process if it is ours; True if one was stopped.

        SIGTERM, wait up to `timeout` seconds, then SIGKILL; the pid file is removed.
        """
        pid = self.pid
        stopped = False
        if pid is not None and (self.owns(pid) or pid in CHILDREN):
            self._signal(pid, signal.SIGTERM)
            if not self._wait_gone(pid, timeout):
                self._signal(pid, signal.SIGKILL)
                self._wait_gone(pid, 5.0)
            stopped = True
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        return stopped

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(tail_lines(self.log_file, n))

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        try:
            # Servers lead their own session: signal the group (forked helpers too).
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> bool:
        child = CHILDREN.get(pid)
        if child is not None:
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            CHILDREN.pop(pid, None)
            return True
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True


def _send_recv(port: int, payload: bytes, timeout: float = 0.5) -> bytes:
    """Send `payload` to 127.0.0.1:port and read until EOF, a newline, or timeout."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(payload)
            chunks: list[bytes] = []
            while True:
                data = s.recv(4096)
                if not data:
                    break
                chunks.append(data)
                if b"\n" in data and payload.endswith(b"\r\n"):
                    break
            return b"".join(chunks)
    except OSError:
        return b""


class RedisServer(Server):
    """redis-server bound to 127.0.0.1, no persistence, noeviction."""

    kind = "redis"

    def command(self) -> list[str]:
        exe = binaries.find_binary("redis-server", self.search_path)
        return [
            str(exe),
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "no",
            "--maxmemory-policy", "noeviction",
            "--set-proc-title", "no",  # keep --dir in /proc/PID/cmdline for marker()
            "--logfile", "",
            "--protected-mode", "no",
        ]  # fmt: skip

    def marker(self) -> str:
        return f"--dir {self.data_dir}"

    def probe(self) -> bool:
        return _send_recv(self.port, b"PING\r\n").startswith(b"+PONG")

    @property
    def address(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


ZK_JAVA_OPTS = [
    "-Xms32m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
    "-Dzookeeper.jmx.log4j.disable=true",
]

LOG4J_PROPERTIES = """\
# Written by podjobs: everything to stdout, which goes to the server's log file.
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n
"""


@dataclass(frozen=True)
class QuorumPeer:
    """One member of a ZooKeeper ensemble as every member's zoo.cfg lists it."""

    server_id: int  # 1..255, the member's `myid`
    client_port: int
    quorum_port: int  # followers to the leader
    election_port: int  # leader election

    def line(self) -> str:
        return (f"server.{self.server_id}={HOST}:{self.quorum_port}:{self.election_port}"
                f";{HOST}:{self.client_port}")


class ZooKeeperServer(Server):
    """A ZooKeeper with short ticks for tests: standalone (ZooKeeperServerMain), or, given
    `quorum` (every member, this one `server_id`), one member of an ensemble
    (QuorumPeerMain, `myid` in its data dir; see `infra.ensemble`).

    tickTime=500ms, so sessions may be as short as `min_session_timeout_ms`
    (1000ms); all four-letter words are allowed, the admin server is off.
    """

    kind = "zookeeper"

    def __init__(
        self,
        port: int,
        data_dir: Path,
        log_file: Path,
        pid_file: Path,
        *,
        conf_dir: Path | None = None,
        tick_ms: int = 500,
        min_session_timeout_ms: int = 1000,
        max_session_timeout_ms: int = 60000,
        java_lib: Path | None = None,
        quorum: Sequence[QuorumPeer] = (),
        server_id: int = 0,
        heap_mb: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(port, data_dir, log_file, pid_file, **kwargs)
        if quorum and server_id not in {q.server_id for q in quorum}:
            raise ConfigurationError(
                f"ZooKeeper server_id {server_id} is not among the ensemble's members "
                f"{sorted(q.server_id for q in quorum)}: give one of them")
        self.quorum = tuple(quorum)
        self.server_id = server_id
        self.heap_mb = heap_mb
        # Default: a "conf" folder beside the data dir.
        self.conf_dir = (
            Path(conf_dir).absolute() if conf_dir is not None else self.data_dir.parent / "conf"
        )
        self.tick_ms = tick_ms
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self.java_lib = java_lib

    @property
    def config_file(self) -> Path:
        return self.conf_dir / "zoo.cfg"

    def zoo_cfg(self) -> str:
        return "\n".join(
            [
                "# Written by podjobs.",
                f"tickTime={self.tick_ms}",
                f"minSessionTimeout={self.min_session_timeout_ms}",
                f"maxSessionTimeout={self.max_session_timeout_ms}",
                f"dataDir={self.data_dir}",
                f"clientPort={self.port}",
                f"clientPortAddress={HOST}",
                "maxClientCnxns=0",
                "admin.enableServer=false",
                "4lw.commands.whitelist=*",
                "forceSync=no",
                *(["initLimit=10", "syncLimit=4", "standaloneEnabled=false",
                   "reconfigEnabled=false", *(q.line() for q in self.quorum)]
                  if self.quorum else []),
                "",
            ]
        )

    def prepare(self) -> None:
        super().prepare()
        if self.quorum:
            (self.data_dir / "myid").write_text(f"{self.server_id}\n")
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.zoo_cfg())
        (self.conf_dir / "log4j.properties").write_text(LOG4J_PROPERTIES)

    def command(self) -> list[str]:
        java = binaries.find_binary("java", self.search_path)
        jars = binaries.find_zookeeper_jars(self.java_lib)
        return [
            str(java),
            *[o if not o.startswith("-Xmx") else f"-Xmx{self.heap_mb}m" for o in ZK_JAVA_OPTS],
            f"-Dlog4j.configuration=file:{self.conf_dir / 'log4j.properties'}",
            "-cp",
            jars.classpath(self.conf_dir),
            ("org.apache.zookeeper.server.quorum.QuorumPeerMain" if self.quorum
             else "org.apache.zookeeper.server.ZooKeeperServerMain"),
            str(self.config_file),
        ]

    def marker(self) -> str:
        return str(self.config_file)

    def four_letter(self, word: str) -> str:
        """Send a ZooKeeper four-letter word (ruok, srvr, mntr, ...) and return the reply."""
        return _send_recv(self.port, word.encode()).decode("utf-8", "replace")

    def probe(self) -> bool:
        # `ruok` answers before the database is loaded; `srvr` only once serving (in an
        # ensemble: once it has joined a quorum).
        return self.four_letter("srvr").startswith("Zookeeper version")

    def mode(self) -> str | None:
        """"leader", "follower" or "standalone" from `srvr`; None when not serving."""
        for line in self.four_letter("srvr").splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


MARIADB_OPTIONS = [
    "--skip-log-bin",
    "--skip-name-resolve",
    "--innodb-buffer-pool-size=64M",
    "--innodb-log-file-size=8M",
    "--innodb-data-file-path=ibdata1:12M:autoextend",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--max-connections=1000",
    "--max-allowed-packet=64M",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
    "--performance-schema=OFF",
]
# Options the bootstrap must share with the server (they shape the files it makes).
_MARIADB_INSTALL_OPTIONS = [
    "--innodb-log-file-size=8M",
    "--innodb-data-file-path=ibdata1:12M:autoextend",
    "--innodb-buffer-pool-size=32M",
]


class MariaDBServer(Server):
    """A private mariadbd: root with an empty password over TCP on 127.0.0.1."""

    kind = "mariadb"
    user = "root"

    @property
    def socket_path(self) -> Path:
        """mysqld.sock in the data dir, or a short hashed path in /tmp if that is too long."""
        path = self.data_dir / "mysqld.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"podjobs-mariadb-{digest}.sock"

    def prepare(self) -> None:
        # Not super().prepare(): the data dir appears only once the install succeeded.
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        if self.data_dir.is_dir():
            return
        install = binaries.find_binary("mariadb-install-db", self.search_path)
        mariadbd = binaries.find_binary("mariadbd", self.search_path)
        tmp = self.data_dir.with_name(self.data_dir.name + ".installing")
        shutil.rmtree(tmp, ignore_errors=True)
        argv = [
            str(install),
            "--no-defaults",
            f"--datadir={tmp}",
            f"--user={self.user}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            f"--basedir={mariadbd.parent.parent}",
            *_MARIADB_INSTALL_OPTIONS,
        ]
        # Seen here about once in a hundred runs: the install exits 1 with nothing but its
        # help text in the log. It writes into a fresh temp dir, so one more try is safe;
        # the first failure stays in the log.
        for attempt in (1, 2):
            shutil.rmtree(tmp, ignore_errors=True)
            with self.log_file.open("ab") as log:
                log.write(f"\n--- podjobs (attempt {attempt}): {' '.join(argv)}\n".encode())
                log.flush()
                rc = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    timeout=300, check=False,
                ).returncode  # fmt: skip
            if rc == 0:
                break
        if rc != 0:
            errors = [ln for ln in tail_lines(self.log_file, 400) if "ERROR" in ln][-10:]
            raise ServerFailed(
                f"mariadb-install-db failed twice (exit {rc}) for {self.data_dir}; "
                f"errors: {errors or 'none logged'}; end of {self.log_file}:\n{self.log_tail(20)}"
            )
        tmp.rename(self.data_dir)

    def command(self) -> list[str]:
        exe = binaries.find_binary("mariadbd", self.search_path)
        return [
            str(exe),
            "--no-defaults",
            f"--datadir={self.data_dir}",
            f"--port={self.port}",
            f"--bind-address={HOST}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.data_dir / 'mariadbd.pid'}",
            f"--user={self.user}",
            f"--log-error={self.log_file}",
            *MARIADB_OPTIONS,
        ]

    def marker(self) -> str:
        return f"--datadir={self.data_dir}"

    def connect(self, database: str | None = None, timeout: float = 2.0) -> Any:
        """A pymysql connection as root (autocommit)."""
        import pymysql

        return pymysql.connect(
            host=HOST, port=self.port, user=self.user, password="",
            database=database, connect_timeout=max(1, int(timeout)), autocommit=True,
        )  # fmt: skip

    def probe(self) -> bool:
        import pymysql

        try:
            conn = pymysql.connect(
                host=HOST, port=self.port, user=self.user, password="", connect_timeout=1
            )
        except pymysql.MySQLError:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            return True
        except pymysql.MySQLError:
            return False
        finally:
            conn.close()

    @property
    def address(self) -> str:
        return f"mysql+pymysql://{self.user}@{HOST}:{self.port}/"


SERVER_KINDS: dict[str, type[Server]] = {
    cls.kind: cls for cls in (RedisServer, ZooKeeperServer, MariaDBServer)
}
