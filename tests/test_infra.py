"""Tests for podjobs.infra: starting, inspecting and stopping the local servers.

Covers `podjobs dev up/status/down` through `podjobs.cli.main`, the `Cluster`
API (idempotent up, restart of a dead server, adding pods), MariaDB shards
(private server and an existing one via mysql_url), the MissingBinary and
PortInUse messages, that a server counts as running until its last thread
has exited, and that no server outlives its owner: after `down`, after
a failing pytest run that used the `cluster` fixture, and after SIGKILL of the
process that started them. Each test uses its own directory under tmp_path.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import redis

from podjobs.cli import main
from podjobs.errors import ConfigurationError, MissingBinary, PortInUse
from podjobs.infra import binaries
from podjobs.infra.cluster import Cluster
from podjobs.infra.ports import check_port_free, free_port, port_is_free, wait_port_closed
from podjobs.infra.servers import (
    RedisServer,
    Server,
    ServerFailed,
    ZooKeeperServer,
    pid_alive,
    read_cmdline,
)
from podjobs.infra.topofile import Topology
from tests.helpers import wait_until

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    """A cluster directory whose servers are stopped after the test, whatever happened."""
    d = tmp_path / "cluster"
    yield d
    Cluster(d).down(timeout=5)


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """The pids still alive after waiting up to `timeout` seconds for all of them to exit."""
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not any(pid_alive(p) for p in pids), timeout, "the processes to exit")
    return [p for p in pids if pid_alive(p)]


def processes_mentioning(text: str) -> list[int]:
    """Live pids whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and pid_alive(int(entry.name)):
            cmdline = read_cmdline(int(entry.name))
            if cmdline and text in cmdline:
                found.append(int(entry.name))
    return found


def zk_srvr(hostport: str) -> str:
    host, _, port = hostport.rpartition(":")
    with socket.create_connection((host, int(port)), 2) as s:
        s.sendall(b"srvr")
        return s.recv(256).decode()


def mysql_databases(port: int) -> set[str]:
    conn = pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


# -- CLI ------------------------------------------------------------------------------


def test_cli_up_status_down(cluster_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(cluster_dir)
    assert main(["dev", "up", "--pods", "2", "--dir", d]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = lines[0]
    assert header.split() == ["pod", "redis", "shard"]
    # Aligned: every pod row has its redis URL and shard URL under the headers.
    for line, pod in zip(lines[1:3], ["p1", "p2"], strict=True):
        assert line.startswith(pod)
        assert line.index("redis://") == header.index("redis")
        assert line.index("sqlite:///") == header.index("shard")
    assert "zookeeper  127.0.0.1:" in out
    assert f"topology: {cluster_dir / 'topology.json'}" in out

    topo = Topology.load(cluster_dir / "topology.json")
    assert topo.pod_names == ["p1", "p2"]
    assert topo.db == "sqlite"
    for pod in topo.pods:
        assert redis.Redis.from_url(pod.redis_url).ping()
        assert pod.shard_url == f"sqlite:///{cluster_dir}/shards/{pod.name}.sqlite3"
    assert zk_srvr(topo.zookeeper).startswith("Zookeeper version")

    assert main(["dev", "status", "--dir", d, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    servers = status["servers"]
    assert [(s["kind"], s["name"]) for s in servers] == [
        ("zookeeper", "zookeeper"), ("redis", "p1"), ("redis", "p2"),
    ]  # fmt: skip
    assert all(s["running"] and s["pid"] and Path(s["log_file"]).is_file() for s in servers)
    pids = [s["pid"] for s in servers]

    assert main(["dev", "status", "--dir", d]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["kind", "name", "pid", "port", "state", "log"]
    assert table.count("running") == 3

    assert main(["dev", "down", "--dir", d]) == 0
    out = capsys.readouterr().out
    assert out.count("stopped ") == 3
    assert wait_gone(pids) == []
    assert not (cluster_dir / "state.json").exists()
    assert not (cluster_dir / "topology.json").exists()

    assert main(["dev", "status", "--dir", d]) == 1
    assert "no cluster recorded" in capsys.readouterr().out
    assert main(["dev", "down", "--dir", d]) == 0  # nothing to stop is fine


def test_cli_reports_errors_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    rc = main(["dev", "up", "--pods", "1", "--dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("podjobs: redis-server, java not found on PATH; install them with ")
    assert "'apt-get install redis-server default-jre-headless'" in err
    assert "make deps" in err
    assert not (tmp_path / "c" / "state.json").exists()

    assert main(["dev", "up", "--pods", "0", "--dir", str(tmp_path / "c")]) == 2
    assert "--pods must be at least 1" in capsys.readouterr().err


# -- Cluster API ----------------------------------------------------------------------


def test_cluster_up_is_idempotent_and_restarts_dead_servers(cluster_dir: Path) -> None:
    cluster = Cluster(cluster_dir, die_with_parent=True)
    topo = cluster.up(2)
    first = {(s.kind, s.name): s.pid for s in cluster.status()}
    assert len(first) == 3 and all(first.values())

    # A second up keeps every process and writes the same topology.
    assert cluster.up(2) == topo
    assert {(s.kind, s.name): s.pid for s in cluster.status()} == first

    # A dead server is restarted on its recorded port; the others are kept.
    victim = first[("redis", "p2")]
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    assert wait_gone([victim]) == []
    by_name = {s.name: s for s in cluster.status()}
    assert not by_name["p2"].running and by_name["p1"].running
    # The kernel may release a dead process's listening socket a moment after the
    # process is reaped; the restart below needs the port, so await that too.
    assert wait_port_closed(by_name["p2"].port)
    assert cluster.up(2) == topo
    after = {(s.kind, s.name): s.pid for s in cluster.status()}
    assert after[("redis", "p2")] != victim
    assert after[("redis", "p1")] == first[("redis", "p1")]
    assert after[("zookeeper", "zookeeper")] == first[("zookeeper", "zookeeper")]
    assert redis.Redis.from_url(topo.pod("p2").redis_url).ping()

    # More pods can be added; fewer, or another db kind, is refused.
    topo3 = cluster.up(3)
    assert topo3.pod_names == ["p1", "p2", "p3"]
    assert topo3.pods[:2] == topo.pods
    with pytest.raises(ConfigurationError, match="already holds 3 pods"):
        cluster.up(2)
    with pytest.raises(ConfigurationError, match="podjobs dev down"):
        cluster.up(3, db="mysql")

    pids = [s.pid for s in cluster.status() if s.pid]
    stopped = cluster.down()
    assert sorted(s.pid for s in stopped if s.pid) == sorted(pids)
    assert wait_gone(pids) == []
    assert cluster.status() == []
    assert processes_mentioning(str(cluster_dir)) == []


def test_mysql_shards_private_and_existing_server(cluster_dir: Path, tmp_path: Path) -> None:
    d = str(cluster_dir)
    assert main(["dev", "up", "--pods", "2", "--db", "mysql", "--dir", d]) == 0
    state = json.loads((cluster_dir / "state.json").read_text())
    pids = [s["pid"] for s in state["servers"]]
    kinds = sorted(s["kind"] for s in state["servers"])
    assert kinds == ["mariadb", "redis", "redis", "zookeeper"]
    port = next(s["port"] for s in state["servers"] if s["kind"] == "mariadb")

    topo = Topology.load(cluster_dir / "topology.json")
    assert topo.db == "mysql"
    assert [p.shard_url for p in topo.pods] == [
        f"mysql+pymysql://root@127.0.0.1:{port}/podjobs_p1",
        f"mysql+pymysql://root@127.0.0.1:{port}/podjobs_p2",
    ]
    assert {"podjobs_p1", "podjobs_p2"} <= mysql_databases(port)

    # An existing server via mysql_url: databases are created there, no mariadbd started.
    other = Cluster(tmp_path / "other", die_with_parent=True)
    try:
        url = f"mysql+pymysql://root@127.0.0.1:{port}/ext"
        topo2 = other.up(1, mysql_url=url)
        assert topo2.pods[0].shard_url == f"mysql+pymysql://root@127.0.0.1:{port}/ext_p1"
        assert [s.kind for s in other.status()] == ["zookeeper", "redis"]
        assert "ext_p1" in mysql_databases(port)
    finally:
        other.down()

    assert main(["dev", "down", "--dir", d]) == 0
    assert wait_gone(pids) == []
    assert processes_mentioning(d) == []
    assert port_is_free(port)


# -- errors ---------------------------------------------------------------------------


def test_sql_backend_cluster_starts_no_redis(cluster_dir: Path, tmp_path: Path) -> None:
    """`dev up --backend sql`: ZooKeeper only (redis-server not even on the search path), each
    pod's queue in its own SQLite shard; a re-up keeps the backend, another one is refused."""
    import shutil

    from podjobs.sqlbackend import SqlBackend

    bin_dir = tmp_path / "bin"  # java and nothing else: no redis-server to start
    bin_dir.mkdir()
    java = shutil.which("java")
    assert java is not None
    (bin_dir / "java").symlink_to(java)
    cluster = Cluster(cluster_dir, die_with_parent=True, search_path=str(bin_dir))
    topo = cluster.up(2, backend="sql")
    assert [s.kind for s in cluster.status()] == ["zookeeper"]
    assert [(p.backend, p.redis_url) for p in topo.pods] == [("sql", ""), ("sql", "")]
    assert Topology.load(cluster.topology_file) == topo
    assert cluster.up(2) == topo  # a plain re-up keeps --backend sql
    with pytest.raises(ConfigurationError, match="already holds a cluster with --backend sql"):
        cluster.up(2, backend="redis")
    backend = SqlBackend(topo.pod("p1").shard_url)
    try:
        assert backend.enqueue("default", ['{"id": "a"}']) == 1
        assert backend.counts()["ready"] == 1
    finally:
        backend.close()


def test_missing_binary_names_the_package(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(MissingBinary) as exc:
        binaries.find_binary("redis-server", search_path=str(empty))
    assert str(exc.value) == (
        "redis-server not found on PATH; install it with 'apt-get install redis-server' "
        "(or run 'make deps' as root)"
    )
    with pytest.raises(MissingBinary, match="apt-get install mariadb-server"):
        binaries.find_binary("mariadbd", search_path=str(empty))
    with pytest.raises(
        MissingBinary, match=r"zookeeper.jar not found in .*apt-get install zookeeper"
    ):
        binaries.find_zookeeper_jars(empty)

    cluster = Cluster(tmp_path / "c", search_path=str(empty))
    with pytest.raises(MissingBinary, match="apt-get install redis-server"):
        cluster.up(1, db="mysql")
    assert cluster.status() == []  # nothing was started or recorded


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not port_is_free(port)
        with pytest.raises(PortInUse, match=f"port {port} .*already in use"):
            check_port_free(port, "redis p1")
        with pytest.raises(PortInUse, match=str(port)):
            RedisServer.in_dir(tmp_path / "r", port).start()
        assert free_port() != port

        cluster = Cluster(tmp_path / "c", die_with_parent=True)
        with pytest.raises(PortInUse, match=f"port {port} .*zookeeper.*--base-port"):
            cluster.up(1, base_port=port)
        assert cluster.status() == []
        assert processes_mentioning(str(tmp_path / "c")) == []
    assert port_is_free(port)


def test_topology_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="podjobs dev up"):
        Topology.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"pods": []}')
    with pytest.raises(ConfigurationError, match="not a podjobs topology"):
        Topology.load(tmp_path / "bad.json")
    topo = Topology.from_dict(
        {"zookeeper": "127.0.0.1:1", "pods": [{"name": "p1", "redis_url": "r", "shard_url": "s"}]}
    )
    topo.save(tmp_path / "t.json")
    assert Topology.load(tmp_path / "t.json") == topo
    with pytest.raises(ConfigurationError, match=r"no pod named 'p9' .*pods: p1"):
        topo.pod("p9")


def test_server_that_exits_at_start_reports_its_log(tmp_path: Path) -> None:
    class BrokenRedis(RedisServer):
        def command(self) -> list[str]:
            return [*super().command(), "--no-such-option", "1"]

    srv = BrokenRedis.in_dir(tmp_path / "r", free_port(), die_with_parent=True)
    srv.start()
    with pytest.raises(ServerFailed, match=r"(?s)exited during start-up.*no-such-option"):
        srv.wait_ready(10)
    assert not srv.is_running()
    srv.stop()


def test_stop_never_touches_a_foreign_process(tmp_path: Path) -> None:
    """A pid file pointing at someone else's process (here: ours) is not signalled."""
    zk = ZooKeeperServer.in_dir(tmp_path / "zk", free_port())
    zk.pid_file.parent.mkdir(parents=True)
    zk.pid_file.write_text(f"{os.getpid()}\n")
    assert not zk.is_running()
    assert zk.stop() is False
    assert not zk.pid_file.exists()


# A process whose main thread has exited while another thread still runs and holds
# its listening socket: how redis, mariadbd or the JVM look for a moment after a
# SIGKILL. /proc/PID/stat (the main thread) then says "Z", but the port is still taken.
HALF_DEAD = """
import ctypes, socket, sys, threading
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
threading.Thread(target=threading.Event().wait).start()  # runs until SIGTERM
ctypes.CDLL(None).syscall(int(sys.argv[2]), 0)  # exit(2): ends only this (main) thread
"""
SYS_EXIT = {"x86_64": 60, "aarch64": 93}.get(os.uname().machine)


class HalfDeadServer(Server):
    kind = "halfdead"

    def command(self) -> list[str]:
        return [sys.executable, "-c", HALF_DEAD, str(self.port), str(SYS_EXIT), str(self.data_dir)]

    def marker(self) -> str:
        return str(self.data_dir)

    def probe(self) -> bool:
        return not port_is_free(self.port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def main_thread_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]


@pytest.mark.skipif(SYS_EXIT is None, reason="exit(2) syscall number unknown on this machine")
def test_a_server_whose_main_thread_exited_still_runs(tmp_path: Path) -> None:
    srv = HalfDeadServer.in_dir(tmp_path / "h", free_port(), die_with_parent=True)
    pid = srv.start()
    try:
        srv.wait_ready(10)
        wait_until(lambda: main_thread_state(pid) == "Z", 10, "the main thread to exit")
        assert not port_is_free(srv.port)
        # As its starter sees it (a child: waitpid decides) ...
        assert pid_alive(pid) and srv.is_running()
        assert srv.marker() in (read_cmdline(pid) or "")
        # ... and as any other process sees it (/proc only).
        script = (
            "from podjobs.infra.servers import pid_alive, read_cmdline; "
            f"print(pid_alive({pid}), {srv.marker()!r} in (read_cmdline({pid}) or ''))"
        )
        seen = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert seen.stdout.split() == ["True", "True"], seen.stderr
        assert srv.stop(timeout=5)  # SIGTERM ends the remaining thread
    finally:
        srv.stop(timeout=5)  # no-op once stopped
    assert not pid_alive(pid) and not srv.is_running()
    assert wait_port_closed(srv.port)


# -- nothing outlives its owner -------------------------------------------------------


GENERATED_TEST = """
import json, os, signal, time

# Ctrl-C must work even if this pytest's parent ignores SIGINT (a background job).
signal.signal(signal.SIGINT, signal.default_int_handler)


def test_uses_the_cluster(cluster):
    servers = cluster.cluster.status()
    info = {"dir": str(cluster.dir), "pids": [s.pid for s in servers]}
    tmp = os.environ["PODJOBS_PIDS_OUT"] + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(info, fh)
    os.replace(tmp, os.environ["PODJOBS_PIDS_OUT"])
    if os.environ["PODJOBS_HOW"] == "interrupt":
        time.sleep(60)  # the run being interrupted: it waits here for the test's SIGINT
    assert False, "deliberate failure"
"""


@pytest.mark.parametrize("how", ["fail", "interrupt"])
def test_session_servers_stop_after_a_failing_or_interrupted_run(tmp_path: Path, how: str) -> None:
    """A pytest run using the `cluster` fixture leaves no server behind, on failure or Ctrl-C."""
    (tmp_path / "test_generated.py").write_text(GENERATED_TEST)
    out_file = tmp_path / "pids.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    env["PODJOBS_PIDS_OUT"] = str(out_file)
    env["PODJOBS_HOW"] = how
    env.pop("PODJOBS_TEST_SERVERS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "servers", "-p", "no:cacheprovider",
         "-q", "test_generated.py"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        if how == "interrupt":
            wait_until(lambda: out_file.exists() or proc.poll() is not None, 60,
                       "the generated test to start")
            proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    info = json.loads(out_file.read_text())
    assert len(info["pids"]) == 5  # zookeeper, mariadb, 3 x redis
    assert wait_gone(info["pids"]) == []
    assert not Path(info["dir"]).exists()
    if how == "fail":
        assert proc.returncode == 1, output
        assert "deliberate failure" in output
        # The report hook attached the end of every server log.
        assert "zookeeper zookeeper log (last 40 lines)" in output
        assert "mariadb mariadb log (last 40 lines)" in output
        assert "redis p3 log (last 40 lines)" in output
        assert "Ready to accept connections" in output
    else:
        assert proc.returncode == 2, output
        assert "KeyboardInterrupt" in output


def test_servers_die_when_their_starter_is_sigkilled(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from podjobs.infra.cluster import Cluster
        c = Cluster({str(tmp_path / "c")!r}, die_with_parent=True)
        c.up(1, db="mysql")
        print(json.dumps([s.pid for s in c.status()]), flush=True)
        time.sleep(120)  # the starter idles until the test SIGKILLs it (the fault)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pids = json.loads(proc.stdout.readline())
        assert len(pids) == 3 and all(pid_alive(p) for p in pids)
    finally:
        proc.kill()
        proc.wait()
    assert wait_gone(pids) == []
    assert processes_mentioning(str(tmp_path / "c")) == []
