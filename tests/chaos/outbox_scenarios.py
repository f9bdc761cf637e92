"""The outbox relay under kill -9 (issue 18): jobs committed into pod p1's outbox (the
ledger's `enq` = the transaction committed), relay processes (`podjobs relay --pod p1`)
killed again and again while they move the rows, the first one by its crash point right
after a push and before deleting the rows (the window that would enqueue twice), then a
relay left running; a pod worker runs the jobs. The checker wants every committed job
finished, none run twice."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from podjobs.db import engine
from podjobs.pods.crashpoints import RELAY_ENV
from podjobs.pods.topology import TopologyStore, register_topology
from podjobs.transactional import TABLE
from tests.chaos import app, faults
from tests.chaos.checker import Observation
from tests.chaos.cluster_scenarios import ClusterCtx
from tests.chaos.harness import Harness
from tests.chaos.scenarios import Size
from tests.helpers import REPO, wait_until

PER_TX = 25


def _unsent(url: str) -> int:
    with engine(url).connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {TABLE}")).scalar_one())


def outbox_relay_kill9(base: Path, size: Size, cx: ClusterCtx) -> Observation:
    register_topology(cx.zk, cx.topology)
    pod = cx.topology.pods[0]
    TopologyStore(cx.zk).assign_many({f"shop-{i}": pod.name for i in range(7)})
    n = max(200, size.jobs // 2)
    with Harness(base, pod_urls=[pod.redis_url], zk_spec=cx.zk_spec) as h:
        committed: list[str] = []
        for start in range(0, n, PER_TX):
            with Session(engine(pod.shard_url)) as s:
                ids = [app.work.call(0.0).enqueue(tenant=f"shop-{i % 7}", db=s).id
                       for i in range(start, min(n, start + PER_TX))]
                s.commit()
            for jid in ids:
                h.ledger.record("enq", jid)
            committed += ids

        def relay(crash: bool) -> subprocess.Popen[bytes]:
            env = dict(os.environ, PYTHONPATH=str(REPO))
            if crash:
                env[RELAY_ENV] = "after_push"
            log = open(base / "relay.log", "ab")
            p = subprocess.Popen([sys.executable, "-m", "podjobs.cli", "relay", "--pod", pod.name,
                                  "--zk", cx.zk_spec, "--batch", "20"],
                                 cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            h.procs.append(p)
            return p

        first = relay(crash=True)
        first.wait(60)                                  # killed itself after its first push
        assert first.returncode == -9, f"relay exited {first.returncode}"
        h.spawn(pod=pod.name, concurrency=4)
        rng = random.Random(18)
        for _ in range(size.kills):
            before = _unsent(pod.shard_url)
            if not before:
                break
            p = relay(crash=False)
            target = before - rng.randint(1, max(1, min(before, 60)))
            wait_until(lambda t=target: _unsent(pod.shard_url) <= t, 60, "the relay moving rows")
            faults.kill9(p)
        relay(crash=False)                              # the last one stays
        wait_until(lambda: _unsent(pod.shard_url) == 0, 60, "the outbox empty")
        h.wait_finished(committed, size.timeout + 30)
        return h.observe(allow_duplicates=False)


MOVED = ("shop-0", "shop-1", "shop-2")


class Writer(threading.Thread):
    """Transactions of 5 outbox jobs into p1's shard, tenants in turn (the moving ones too:
    a client that still writes to the old shard), until stopped; each committed id to the
    ledger after its commit."""

    def __init__(self, url: str, h: Harness) -> None:
        super().__init__(name="outbox-writer", daemon=True)
        self.url, self.h = url, h
        self.stop = threading.Event()
        self.ids: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        i = 0
        while not self.stop.is_set() and len(self.ids) < 3000:
            try:
                with Session(engine(self.url)) as s:
                    ids = [app.work.call(0.0).enqueue(tenant=f"shop-{(i + k) % 7}", db=s).id
                           for k in range(5)]
                    s.commit()
            except Exception as exc:  # not committed: not in the ledger
                self.errors.append(f"{type(exc).__name__}: {exc}")
            else:
                for jid in ids:
                    self.h.ledger.record("enq", jid)
                self.ids += ids
            i += 5
            self.stop.wait(0.02)


def outbox_move_relay_kill9(base: Path, size: Size, cx: ClusterCtx) -> Observation:
    """Tenants moved p1 -> p2 (`tenants move --jobs-only`, subprocesses) while jobs are
    committed into p1's outbox, before and during the moves, and p1's relays are killed
    (kill -9) again and again while the mover runs (the first one by its crash point right
    after a push, before its delete). Workers on both pods. Every committed job must finish
    once: a move carries its tenant's unsent rows (claimed against the relay), and rows
    committed on p1 after a move are relayed there and forwarded to p2."""
    register_topology(cx.zk, cx.topology)
    p1, p2 = cx.topology.pods[0], cx.topology.pods[1]
    TopologyStore(cx.zk).assign_many({f"shop-{i}": p1.name for i in range(7)})
    n = max(200, size.jobs // 2)
    moves = MOVED[: 1 if size.runs == 1 else 3]
    rng = random.Random(1818)
    notes: list[str] = []
    with Harness(base, pod_urls=[p1.redis_url, p2.redis_url], zk_spec=cx.zk_spec) as h:
        committed: list[str] = []
        for start in range(0, n, PER_TX):
            with Session(engine(p1.shard_url)) as s:
                ids = [app.work.call(0.0).enqueue(tenant=f"shop-{i % 7}", db=s).id
                       for i in range(start, min(n, start + PER_TX))]
                s.commit()
            for jid in ids:
                h.ledger.record("enq", jid)
            committed += ids
        log_path = base / "relay.log"

        def relay(crash: bool) -> subprocess.Popen[bytes]:
            env = dict(os.environ, PYTHONPATH=str(REPO))
            if crash:
                env[RELAY_ENV] = "after_push"
            log = open(log_path, "ab")
            p = subprocess.Popen([sys.executable, "-m", "podjobs.cli", "relay", "--pod", p1.name,
                                  "--zk", cx.zk_spec, "--batch", "20", "--log-level", "info"],
                                 cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            h.procs.append(p)
            return p

        def leading() -> int:
            return log_path.read_bytes().count(b"relaying the outbox") if log_path.exists() else 0

        first = relay(crash=True)
        first.wait(60)                                  # killed itself after its first push
        if first.returncode != -9:
            raise AssertionError(f"relay exited {first.returncode}")
        for pod in (p1, p2):
            h.spawn(pod=pod.name, concurrency=4)
        writer = Writer(p1.shard_url, h)
        writer.start()
        kills = 0
        for tenant in moves:
            env = dict(os.environ, PYTHONPATH=str(REPO))
            with open(base / "mover.log", "ab") as log:
                mover = subprocess.Popen(
                    [sys.executable, "-m", "podjobs.cli", "tenants", "move", tenant, "--to",
                     p2.name, "--jobs-only", "--zk", cx.zk_spec, "--timeout", "20"],
                    cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            h.procs.append(mover)
            while mover.poll() is None:
                seen = leading()
                r = relay(crash=False)
                wait_until(lambda s=seen, m=mover: leading() > s or m.poll() is not None, 30,
                           "the relay to lead, or the move to end")
                time.sleep(rng.uniform(0.0, 0.3))       # the fault's moment
                faults.kill9(r)
                kills += 1
            if mover.returncode != 0:
                notes.append(f"the move of {tenant} failed: exit {mover.returncode} "
                             f"(see mover.log)")
        writer.stop.set()
        writer.join(30)
        relay(crash=False)                              # the last one stays
        wait_until(lambda: _unsent(p1.shard_url) == 0, 60, "the outbox empty")
        if writer.errors:
            notes.append(f"commits refused: {writer.errors[:3]}")
        if kills < 1:
            notes.append("no relay was killed during a move: the scenario tested nothing")
        h.wait_finished(committed + writer.ids, size.timeout + 30)
        print(f"outbox_move_relay_kill9: {len(committed)} + {len(writer.ids)} committed, "
              f"{len(moves)} move(s), {kills} relay kill(s) during them")
        obs = h.observe(allow_duplicates=False)
        return replace(obs, notes=[*obs.notes, *notes])
