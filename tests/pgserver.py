"""A private PostgreSQL server for the SQL backend's tests (issue 19): initdb into a temp dir,
`postgres` on a free loopback port (as the `postgres` user when the tests run as root, which
PostgreSQL refuses), stopped by its pid; it dies with the test process (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from podjobs.infra.ports import free_port
from podjobs.infra.procs import pdeathsig_preexec

BINARIES = ("initdb", "postgres")


def missing() -> str | None:
    """Why no PostgreSQL server can be started here (None: it can)."""
    for b in BINARIES:
        if shutil.which(b) is None:
            return f"no {b} on PATH"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "no psycopg (pip install 'psycopg[binary]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no 'postgres' user to run the server as"
    return None


class PgServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="podjobs-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.log = self.dir / "postgres.log"

    def _run(self, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, user=self.user, stdout=open(self.log, "ab"),
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir,
                                preexec_fn=pdeathsig_preexec(signal.SIGKILL), **kw)  # type: ignore[call-overload]

    def start(self, timeout: float = 60) -> str:
        data = self.dir / "data"
        rc = self._run(["initdb", "-D", str(data), "-U", "postgres", "-A", "trust",
                        "--no-sync", "-E", "UTF8"]).wait(timeout)
        if rc != 0:
            raise RuntimeError(f"initdb failed ({rc}): {self.log.read_text()[-2000:]}")
        self.proc = self._run(["postgres", "-D", str(data), "-p", str(self.port),
                               "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1",
                               "-c", "fsync=off", "-c", "max_connections=200"])
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                                     autocommit=True, connect_timeout=2) as c:
                    c.execute("CREATE DATABASE podjobs_test")
                break
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"postgres did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/podjobs_test"

    def reset(self) -> None:
        """Drop every table (the public schema, made anew)."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=podjobs_test",
                             autocommit=True) as c:
            c.execute("DROP SCHEMA public CASCADE")
            c.execute("CREATE SCHEMA public")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
