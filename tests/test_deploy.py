"""A deploy pipeline against real ZooKeeper, Redis and MariaDB: ship a revision, restart
schedulers and workers in either order, `podjobs migrations wait --migrations DIR`.

The pipeline's contract (README "Deploy"): `wait` exits 0 only once every shard has the
head of the revisions the deploy ships, 1 when one of them fails, 3 on timeout (a revision
no leader published yet is waited for, not failed), 4 when ZooKeeper stops answering.
Workers are in this process and keep the revisions they read before the deploy: a worker
that was not restarted reads the directory again when a revision is missing.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podjobs.pods.podworker import PodWorker
from podjobs.pods.zk import ZK
from podjobs.scheduler.migrate import close_zk_clients, pod_worker
from podjobs.scheduler.runs import RunStore
from tests.chaos.proxy import Proxy
from tests.helpers import REPO, fast_config, stop_proc
from tests.test_scheduler import (  # noqa: F401 - fixtures, by name
    MIGRATIONS,
    Schedulers,
    cli,
    control,
    schedulers,
    shard_state,
    shards,
)


class PodWorkers:
    """One in-process pod worker per pod, restartable (a deploy restarts them)."""

    def __init__(self, zk: ZK, pods: list[str]) -> None:
        self.zk, self.pods = zk, pods
        self.workers: list[PodWorker] = []

    def start(self) -> None:
        self.workers = [pod_worker(self.zk, p, fast_config(concurrency=2)) for p in self.pods]
        for w in self.workers:
            w.start()

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers = []


@pytest.fixture
def pod_workers(zk: ZK, shards: dict[str, str]) -> Iterator[PodWorkers]:  # noqa: F811
    ws = PodWorkers(zk, sorted(shards))
    ws.start()
    yield ws
    ws.stop()
    close_zk_clients()


def ship(directory: Path, *revisions: str) -> None:
    """The deploy puts the code of `revisions` in place (the test revisions' files)."""
    (directory / "versions").mkdir(parents=True, exist_ok=True)
    for f in sorted((Path(MIGRATIONS) / "versions").glob("*.py")):
        if f.name[:4] in revisions:
            shutil.copy(f, directory / "versions" / f.name)


def wait_cmd(zk_spec: str, directory: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "podjobs.cli", "migrations", "wait", "--zk", zk_spec,
            "--migrations", str(directory), "--interval", "0.1", *extra]


def run_wait(zk_spec: str, directory: Path, *extra: str,
             timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(wait_cmd(zk_spec, directory, *extra), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def everywhere(zk: ZK, shards: dict[str, str], rev: str) -> bool:  # noqa: F811
    store = RunStore(zk)
    return all(shard_state(url)[0] == rev and (r := store.get(p, rev)) is not None
               and r.state == "complete" for p, url in shards.items())


def restart_scheduler(s: Schedulers, old: str, new: str, directory: Path) -> None:
    """SIGTERM the old scheduler and start the new one at once (the old one may still lead
    for a while): what a deploy does."""
    s.procs[old].send_signal(signal.SIGTERM)
    s.start(new, "--migrations", str(directory))


def test_deploy_pipeline_in_either_restart_order_and_every_exit_code(
        zk: ZK, shards: dict[str, str], pod_workers: PodWorkers,  # noqa: F811
        schedulers: Schedulers, tmp_path: Path, cluster: Any) -> None:  # noqa: F811
    mig = tmp_path / "migrations"
    spec = schedulers.zk_spec
    ship(mig, "0001", "0002")
    schedulers.start("s1", "--migrations", str(mig))
    res = run_wait(spec, mig, "--timeout", "60")
    assert res.returncode == 0, res.stdout + res.stderr
    assert everywhere(zk, shards, "0002")

    # 1. schedulers before workers: the workers read 0001-0002 before 0003 existed
    ship(mig, "0003")
    restart_scheduler(schedulers, "s1", "s2", mig)
    res = run_wait(spec, mig, "--timeout", "60", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert everywhere(zk, shards, "0003"), "wait passed before every shard had 0003"
    out = json.loads(res.stdout)
    assert out["outcome"] == "done" and out["revision"] == "0003" and out["exit_code"] == 0
    assert {s["current"] for s in out["shards"]} == {"0003"}
    pod_workers.stop()
    pod_workers.start()

    # 2. workers before schedulers: until a scheduler that knows 0004 leads, wait never
    # passes; it times out with 3 (the leader's head is still 0003 everywhere)
    ship(mig, "0004")
    pod_workers.stop()
    pod_workers.start()
    res = run_wait(spec, mig, "--timeout", "1")
    assert res.returncode == 3, res.stdout + res.stderr
    assert "to publish 0004" in res.stdout and "timed out" in res.stdout
    restart_scheduler(schedulers, "s2", "s3", mig)
    res = run_wait(spec, mig, "--timeout", "60")
    assert res.returncode == 0, res.stdout + res.stderr
    assert everywhere(zk, shards, "0004")

    # 3. ZooKeeper stops answering (frozen, as a SIGSTOP would) while wait waits: exit 4
    ship(mig, "0005")
    control(shards["p1"], "0005", fail=1)
    zk_port = int(cluster.topology.zookeeper.rsplit(":", 1)[1])
    proxy = Proxy(zk_port)
    try:
        frozen_spec = f"127.0.0.1:{proxy.port}{spec[spec.index('/'):]}"
        p = subprocess.Popen(wait_cmd(frozen_spec, mig, "--timeout", "60", "--zk-grace", "1"),
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stdout is not None
        assert "to publish 0005" in p.stdout.readline()  # it reads through the proxy
        proxy.blackhole(True)
        out_, err = p.communicate(timeout=30)
        assert p.returncode == 4, out_ + err
        assert "ZooKeeper at" in out_ and "unreachable" in out_ and "Traceback" not in err
    finally:
        proxy.close()

    # 4. a failing revision: exit 1, naming it
    restart_scheduler(schedulers, "s3", "s4", mig)
    res = run_wait(spec, mig, "--timeout", "60")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "p1: 0005 failed" in res.stdout
    for name in ("s1", "s2", "s3"):
        assert stop_proc(schedulers.procs[name]) == 0


def test_wait_refuses_a_revision_its_directory_does_not_have(
        zk: ZK, cluster: Any, zk_root: str, tmp_path: Path) -> None:
    ship(tmp_path, "0001")
    res = cli(cluster.topology.zookeeper + zk_root, "migrations", "wait", "--migrations",
              str(tmp_path), "--revision", "0009", "--timeout", "1")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("podjobs: revision '0009' is not in") and "0001" in res.stderr
