"""The scheduler on real ZooKeeper, Redis and MariaDB: migrations as jobs, leader failover.

Three pods (p1..p3, a MariaDB database each), pod workers in this process,
scheduler processes started with the real CLI. The test revisions
(tests/apps/migrations) record what they do in each shard's `mig_probe`
table, and read `mig_control` to fail or pause (tests/apps/migration_probe.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from podjobs.infra.topology import Topology
from podjobs.pods.topology import register_topology
from podjobs.pods.worker import PodWorker
from podjobs.pods.zk import ZK
from podjobs.scheduler import status as status_mod
from podjobs.scheduler.leader import leader_info
from podjobs.scheduler.runs import RunStore, shard_history
from tests.apps import migration_probe
from tests.helpers import REPO, fast_config, stop_proc, wait_until

MIGRATIONS = str(REPO / "tests" / "apps" / "migrations")
ORDER = ["0001", "0002", "0003", "0004", "0005"]
SESSION = 2.0  # ZooKeeper session timeout of the schedulers (the server allows >= 1 s)


@pytest.fixture
def shards(zk: ZK, pods: Topology) -> dict[str, str]:
    register_topology(zk, pods)
    urls = {p.name: p.shard_url for p in pods.pods}
    for url in urls.values():
        e = create_engine(url)
        with e.begin() as c:
            migration_probe.create_tables(c)
        e.dispose()
    return urls


@pytest.fixture
def workers(zk: ZK, shards: dict[str, str]) -> Iterator[list[PodWorker]]:
    ws = [PodWorker(zk, name, fast_config(concurrency=2)) for name in sorted(shards)]
    for w in ws:
        w.start()
    yield ws
    for w in ws:
        w.stop()


class Schedulers:
    """Scheduler processes started with the CLI, stopped at the end of the test."""

    def __init__(self, zk_spec: str, logdir: Path) -> None:
        self.zk_spec = zk_spec
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "podjobs.cli", "scheduler", "--zk", self.zk_spec,
               "--migrations", MIGRATIONS, "--id", name, "--interval", "0.1",
               "--session-timeout", str(SESSION), "--requeue-after", "3", "--steal-after", "1",
               *extra]
        log = open(self.logdir / f"{name}.log", "ab")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = p
        return p

    def log(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
            stop_proc(p)


@pytest.fixture
def schedulers(cluster: Any, zk_root: str, tmp_path: Path) -> Iterator[Schedulers]:
    s = Schedulers(cluster.topology.zookeeper + zk_root, tmp_path)
    yield s
    s.stop_all()


def shard_state(url: str) -> tuple[str | None, list[tuple[str, str, float]], list[dict[str, Any]]]:
    e = create_engine(url)
    try:
        with e.connect() as c:
            rev = c.execute(text("SELECT version_num FROM alembic_version")).scalar() \
                if c.dialect.has_table(c, "alembic_version") else None
            return rev, migration_probe.events(c), shard_history(c)
    finally:
        e.dispose()


def at_head(shards: dict[str, str], rev: str = "0005") -> bool:
    return all(shard_state(u)[0] == rev for u in shards.values())


def all_complete(zk: ZK, pods: list[str], rev: str = "0005") -> bool:
    store = RunStore(zk)
    return all((r := store.get(p, rev)) is not None and r.state == "complete" for p in pods)


def check_applied_once_in_order(url: str) -> None:
    """Each revision started and ended exactly once, in order, never overlapping another."""
    _, events, history = shard_state(url)
    starts = [r for r, e, _ in events if e == "start"]
    ends = [r for r, e, _ in events if e == "end"]
    assert starts == ORDER and ends == ORDER, events
    open_rev = None
    for r, e, _ in events:
        if e == "start":
            assert open_rev is None, f"{r} started while {open_rev} was running: {events}"
            open_rev = r
        elif e == "end":
            assert open_rev == r
            open_rev = None
    done = [h["revision"] for h in history if h["state"] == "complete"]
    assert done == ORDER, history


def test_five_revisions_reach_head_in_order_on_every_shard_one_at_a_time(
        zk: ZK, shards: dict[str, str], workers: list[PodWorker], schedulers: Schedulers) -> None:
    schedulers.start("s1", "--canary", "p2", "--wave", "1")
    wait_until(lambda: all_complete(zk, sorted(shards)), 60, "every shard at head")
    for url in shards.values():
        check_applied_once_in_order(url)
    # the canary went first: p2 finished each revision before any other pod started it
    ev = {p: shard_state(u)[1] for p, u in shards.items()}
    for rev in ORDER:
        p2_end = next(t for r, e, t in ev["p2"] if r == rev and e == "end")
        for other in ("p1", "p3"):
            start = next(t for r, e, t in ev[other] if r == rev and e == "start")
            assert start > p2_end, f"{other} started {rev} before the canary p2 finished it"
    st = status_mod.collect(zk)
    assert st["head"] == "0005" and st["leader"]["id"] == "s1"
    assert all(s["current"] == "0005" and not s["pending"] and not s["running"]
               for s in st["shards"])
