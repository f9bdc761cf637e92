"""Exactly-once effects under kill -9 (issue 18): `chaos.charge` jobs on pod p1 each write
one "charge" row into `chaos_charges` on the pod's MariaDB shard under `ctx.once`, while
the pod's workers are killed again and again: each worker SIGKILLs itself right after the
shard commit of its k-th charge and before the ack (k random: the window where a re-run
repeats the effect), and the scenario kills a random worker with kill -9 at points of the
drain (whatever it is doing). Killed workers are replaced. Runs may repeat (at-least-once);
the check is exactly one charge row per job (`Observation.effects`).

`once_charge_kill9_without_once` is the control: the same jobs without ctx.once; it must
fail with charges done twice (one per self-kill, at least), showing the check can fail."""

from __future__ import annotations

import random
import subprocess
from dataclasses import replace
from pathlib import Path

from sqlalchemy import text

from podjobs.db import engine
from podjobs.pods.topology import register_topology
from tests.chaos import app, faults
from tests.chaos import ledger as ledger_mod
from tests.chaos.checker import Observation
from tests.chaos.cluster_scenarios import ClusterCtx
from tests.chaos.harness import Harness
from tests.chaos.scenarios import Size
from tests.helpers import wait_until

#: figures of the last run (for the report; tests/chaos/runner.py records the verdict)
LAST: dict[str, int] = {}


def _charges(url: str) -> dict[str, int]:
    with engine(url).connect() as conn:
        return {str(r[0]): int(r[1]) for r in conn.execute(text(
            f"SELECT job_id, COUNT(*) FROM {app.CHARGES} GROUP BY job_id"))}


def _charge_kill9(base: Path, size: Size, cx: ClusterCtx, use_once: bool) -> Observation:
    register_topology(cx.zk, cx.topology)
    pod = cx.topology.pods[0]
    with engine(pod.shard_url).begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {app.CHARGES}"))
        conn.execute(text(f"CREATE TABLE {app.CHARGES} (id BIGINT AUTO_INCREMENT PRIMARY KEY,"
                          f" job_id CHAR(26) NOT NULL, KEY (job_id))"))
    n = max(150, size.jobs // 2)            # quick 150, full 2000
    self_kills = 2 * size.kills             # quick 4, full 16
    external = size.kills                   # quick 2, full 8
    rng = random.Random(18)
    with Harness(base, pod_urls=[pod.redis_url], zk_spec=cx.zk_spec) as h:
        spawned = 0

        def spawn() -> subprocess.Popen[bytes]:
            nonlocal spawned
            env = {}
            if spawned < self_kills:
                env[app.DIE_AFTER_COMMIT] = str(rng.randint(3, max(4, n // (self_kills + 2))))
            spawned += 1
            return h.spawn(pod=pod.name, concurrency=4, env=env)

        ids = h.enqueue_many(app.charge, n, use_once)
        workers = [spawn(), spawn()]
        targets = [n * k // (external + 1) for k in range(1, external + 1)]
        died = killed = 0

        def finishes() -> int:
            return ledger_mod.count(h.ledger_dir, "finish")

        def something() -> bool:
            return (any(w.poll() is not None for w in workers)
                    or bool(targets and finishes() >= targets[0])
                    or set(ids) <= h.finished())

        while not set(ids) <= h.finished():
            wait_until(something, size.timeout + 30, "a worker to die, a kill point or the end")
            if targets and finishes() >= targets[0]:
                targets.pop(0)
                live = [w for w in workers if w.poll() is None]
                if live:
                    faults.kill9(rng.choice(live))
                    killed += 1
            for i, w in enumerate(workers):
                if w.poll() is not None:
                    died += w.returncode == -9
                    workers[i] = spawn()
        for i, w in enumerate(workers):                 # a death at the very end
            if w.poll() is not None:
                died += w.returncode == -9
                workers[i] = spawn()
        obs = h.observe(allow_duplicates=True)         # waits for redeliveries to settle
        charges = _charges(pod.shard_url)
        LAST.clear()
        LAST.update(jobs=n, worker_deaths=died, external_kills=killed,
                    self_kills=died - killed, runs=ledger_mod.count(h.ledger_dir, "start"),
                    charge_rows=sum(charges.values()),
                    charged_twice=sum(1 for c in charges.values() if c > 1))
        print(f"once_charge_kill9 use_once={use_once}: {LAST}")
        notes = list(obs.notes)
        if died - killed < 1:
            notes.append("no worker died after a commit: the scenario tested nothing")
        return replace(obs, notes=notes, effects=charges)


def once_charge_kill9(base: Path, size: Size, cx: ClusterCtx) -> Observation:
    return _charge_kill9(base, size, cx, use_once=True)


def once_charge_kill9_without_once(base: Path, size: Size, cx: ClusterCtx) -> Observation:
    return _charge_kill9(base, size, cx, use_once=False)
