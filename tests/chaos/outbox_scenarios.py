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
