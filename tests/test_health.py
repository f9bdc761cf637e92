"""Health on real servers: /readyz while ZooKeeper goes away and comes back; `podjobs
worker check` and `podjobs scheduler check` (exit codes of podjobs.checks) against real
processes, which also tell a real NOTIFY_SOCKET that they are READY (sd_notify)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from podjobs import cli
from podjobs.infra.ports import free_port
from podjobs.pods.topology import register_topology
from podjobs.pods.zk import ZK
from tests.chaos.proxy import Proxy
from tests.helpers import REPO, spawn_worker, stop_proc, wait_until


def podjobs(*args: str) -> subprocess.CompletedProcess[str]:
    """`podjobs ARGS` in this process (the probes are short commands; a process each would
    cost a second of imports): its exit code and output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(args))
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A NOTIFY_SOCKET the processes started by the test inherit."""
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    yield s
    s.close()


def test_worker_check_and_sd_notify(redis_url: str, notify: socket.socket, tmp_path: Path) -> None:
    r = podjobs("worker", "check", "--redis", redis_url, "--json")
    assert r.returncode == 1, r.stdout + r.stderr          # no worker yet
    assert "no worker" in json.loads(r.stdout)["message"]
    p = spawn_worker(redis_url, log=tmp_path / "worker.log")
    try:
        assert notify.recv(4096).startswith(b"READY=1\nSTATUS=worker ")
        assert notify.recv(64) == b"WATCHDOG=1"
        r = podjobs("worker", "check", "--redis", redis_url, "--pid", str(p.pid))
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("ok: 1 worker(s) of host ")
        p.send_signal(19)  # SIGSTOP: the heartbeat expires (TTL 1 s), the worker stays registered

        def expired() -> bool:
            return podjobs("worker", "check", "--redis", redis_url, "--pid", str(p.pid)).returncode == 1

        wait_until(expired, timeout=20, what="the paused worker's heartbeat to expire")
        p.send_signal(18)  # SIGCONT
    finally:
        stop_proc(p)
    assert podjobs("worker", "check", "--redis", "redis://127.0.0.1:1/0").returncode == 3


@pytest.fixture
def zk_spec(cluster: Any, zk_root: str) -> str:
    return str(cluster.topology.zookeeper + zk_root)


def test_scheduler_check_and_sd_notify(cluster: Any, zk: ZK, zk_spec: str, notify: socket.socket,
                                       tmp_path: Path) -> None:
    register_topology(zk, cluster.topology)
    assert podjobs("scheduler", "check", "--zk", zk_spec).returncode == 1   # none contends
    log = open(tmp_path / "scheduler.log", "ab")
    cmd = [sys.executable, "-m", "podjobs.cli", "scheduler", "--zk", zk_spec, "--app",
           "tests.apps.periodic_app", "--id", "probe-a", "--log-level", "warning"]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert notify.recv(4096).startswith(b"READY=1\nSTATUS=scheduler probe-a")
        assert notify.recv(64) == b"WATCHDOG=1"

        def leads() -> bool:
            r = podjobs("scheduler", "check", "--zk", zk_spec, "--id", "probe-a", "--json")
            return r.returncode == 0 and json.loads(r.stdout)["state"] == "leader"

        wait_until(leads, timeout=30, what="probe-a to lead")
        r = podjobs("scheduler", "check", "--zk", zk_spec, "--id", "probe-b")
        assert r.returncode == 1 and "no scheduler of scheduler probe-b" in r.stdout
    finally:
        stop_proc(p)
        log.close()
    assert podjobs("scheduler", "check", "--zk", "127.0.0.1:1", "--timeout", "1").returncode == 3


def test_readyz_is_503_while_zookeeper_is_away(cluster: Any, tmp_path: Path) -> None:
    topo = cluster.topology
    root = f"/podjobs-readyz-{uuid.uuid4().hex[:12]}"
    zk = ZK(topo.zookeeper, root)
    zk.start(10)
    register_topology(zk, topo)
    proxy = Proxy(int(topo.zookeeper.rsplit(":", 1)[1]))
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"operator": True, "token": "x" * 20}]}))
    port = free_port()
    log = open(tmp_path / "api.log", "ab")
    p = subprocess.Popen([sys.executable, "-m", "podjobs.cli", "api", "--port", str(port),
                          "--zk", f"127.0.0.1:{proxy.port}{root}", "--tokens", str(tokens),
                          "--log-level", "warning"],
                         cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    url = f"http://127.0.0.1:{port}"

    def status(path: str) -> int:
        if p.poll() is not None:
            raise AssertionError((tmp_path / "api.log").read_text()[-2000:])
        try:
            return httpx.get(url + path, timeout=2).status_code
        except httpx.HTTPError:
            return 0

    try:
        wait_until(lambda: status("/readyz") == 200, timeout=30, what="the API to be ready")
        proxy.refuse(True)   # ZooKeeper away: the directory may be stale
        wait_until(lambda: status("/readyz") == 503, timeout=30, what="/readyz 503")
        assert status("/healthz") == 200          # alive all the same
        r = httpx.get(url + "/readyz")
        assert r.json()["zookeeper"] == "disconnected" and r.headers["Retry-After"] == "5"
        proxy.refuse(False)
        wait_until(lambda: status("/readyz") == 200, timeout=60, what="/readyz 200 again")
    finally:
        stop_proc(p)
        log.close()
        proxy.close()
        zk.kazoo_client.delete(root, recursive=True)
        zk.stop()


def test_podjobs_web_serves_the_dashboard_alone(cluster: Any, zk: ZK, zk_spec: str,
                                                tmp_path: Path) -> None:
    register_topology(zk, cluster.topology)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"operator": True, "token": "y" * 20}]}))
    port = free_port()
    log = open(tmp_path / "web.log", "ab")
    p = subprocess.Popen([sys.executable, "-m", "podjobs.cli", "web", "--port", str(port),
                          "--zk", zk_spec, "--tokens", str(tokens), "--log-level", "warning"],
                         cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if p.poll() is not None:
            raise AssertionError((tmp_path / "web.log").read_text()[-2000:])
        try:
            return httpx.get(url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=30, what="podjobs web")
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/ui/").headers["location"].startswith("/ui/login")
            assert c.post("/ui/login", data={"token": "y" * 20}).status_code == 303
            page = c.get("/ui/")
            assert page.status_code == 200 and 'id="pod-p1"' in page.text
            assert c.get("/v1/pods").status_code == 404      # no HTTP API here
            assert c.get("/ui/static/live.js").status_code == 200
    finally:
        stop_proc(p)
        log.close()
