"""Tenant moves and rollbacks survive kill -9 of the mover at any point (issue 11 item 8).

The mover runs as a real `podjobs tenants move` process that kills itself with
SIGKILL at a named point (`PODJOBS_MOVE_CRASH_AT`, pods/crashpoints.py); another
process then resumes or rolls back. A ledger (one row per run of each job, on
the shard it ran on) must show every job exactly once, nothing left held or staged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from podjobs import keys
from podjobs.fairshare import ready_count
from podjobs.infra.topofile import Topology
from podjobs.pods.moves import Mover
from podjobs.pods.router import PodClient
from podjobs.pods.topology import TopologyStore
from podjobs.pods.zk import ZK
from tests.apps import moves_app
from tests.helpers import REPO, stop_proc, wait_until
from tests.test_moves import client, hooks, runs, store, workers  # noqa: F401 - fixtures by name

N = 300


def mover_cli(cluster: Any, zk_root: str, *args: str, crash_at: str | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PODJOBS_MOVE_CRASH_AT", None)
    if crash_at:
        env["PODJOBS_MOVE_CRASH_AT"] = crash_at
    cmd = [sys.executable, "-m", "podjobs.cli", "tenants", "move", *args,
           "--zk", cluster.topology.zookeeper + zk_root, "--timeout", "20"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def killed(res: subprocess.CompletedProcess[str]) -> None:
    assert res.returncode == -signal.SIGKILL, f"the mover was not killed: {res.returncode} {res.stderr}"


def ok(res: subprocess.CompletedProcess[str]) -> None:
    assert res.returncode == 0, f"exit {res.returncode}: {res.stdout}{res.stderr}"


def leftovers(pods: Topology) -> dict[str, int]:
    """Anything of the tenant still queued, scheduled, held, staged or in flight, per pod and key."""
    out: dict[str, int] = {}
    for p in pods.pods:
        r = redis.Redis.from_url(p.redis_url)
        n = {"q": ready_count(r, "default"), "sched": r.zcard(keys.scheduled("default")),
             "retry": r.zcard(keys.retry("default")), "held": r.hlen(keys.held("mover")),
             "carry": r.hlen(keys.carry("mover"))}
        n["inflight"] = sum(int(r.hlen(k)) for k in r.scan_iter(match=keys.inflight("*", "*")))
        out.update({f"{p.name}:{k}": int(v) for k, v in n.items() if v})
        r.close()
    return out


def ledger(pods: Topology) -> Counter[int]:
    return Counter(r[1] for r in runs(pods) if r[0] == "mover")


def drain(pods: Topology, expected: int, timeout: float = 25) -> Counter[int]:
    """Wait until the expected jobs ran and nothing is left anywhere; the ledger."""
    wait_until(lambda: sum(ledger(pods).values()) >= expected and not leftovers(pods),
               timeout=timeout, what=f"{expected} runs and nothing left queued or held")
    return ledger(pods)


def assert_once(counts: Counter[int], expected: set[int]) -> None:
    twice = sorted(n for n, c in counts.items() if c > 1)
    lost = sorted(expected - set(counts))
    assert not twice and not lost, f"{len(twice)} job(s) ran twice, {len(lost)} lost"


def test_a_mover_killed_between_writing_the_destination_and_clearing_staging_rolls_back_once(
        zk: ZK, cluster: Any, zk_root: str, store: TopologyStore, client: PodClient,  # noqa: F811
        pods: Topology) -> None:
    """(a) kill after the carried jobs were held on p2, before p1's staging was cleared."""
    moves_app.record_run.enqueue_many([(i, 0.0) for i in range(N)], tenant="mover")
    killed(mover_cli(cluster, zk_root, "mover", "--to", "p2", "--jobs-only", crash_at="carry_written"))
    ok(mover_cli(cluster, zk_root, "mover", "--rollback"))
    assert store.where("mover").pod == "p1" and store.where("mover").move is None
    ws = workers(zk, ["p1", "p2"])
    try:
        counts = drain(pods, N)
    finally:
        for w in ws:
            w.stop()
    assert_once(counts, set(range(N)))
    assert {r[2] for r in runs(pods)} == {"p1"}


def test_a_rollback_killed_after_its_first_write_can_be_run_again(
        zk: ZK, cluster: Any, zk_root: str, store: TopologyStore, client: PodClient,  # noqa: F811
        pods: Topology) -> None:
    """(b) the rollback itself is killed: running it again returns every job."""
    moves_app.record_run.enqueue_many([(i, 0.0) for i in range(N)], tenant="mover")
    killed(mover_cli(cluster, zk_root, "mover", "--to", "p2", "--jobs-only", crash_at="before_copy_data"))
    killed(mover_cli(cluster, zk_root, "mover", "--rollback", crash_at="rollback_recorded"))
    again = mover_cli(cluster, zk_root, "mover", "--rollback")
    assert again.returncode == 0, f"{again.stderr.strip()}; left: {leftovers(pods)}"
    assert store.where("mover").pod == "p1" and store.where("mover").move is None
    ws = workers(zk, ["p1", "p2"])
    try:
        counts = drain(pods, N)
    finally:
        for w in ws:
            w.stop()
    assert_once(counts, set(range(N)))


def test_scheduled_jobs_coming_due_during_a_killed_rollback_run_once(
        zk: ZK, cluster: Any, zk_root: str, store: TopologyStore, client: PodClient,  # noqa: F811
        pods: Topology) -> None:
    """(c) the rollback is killed between writing the scheduled jobs back to p1 and removing
    them from p2, and they come due (with workers on both pods) before it is run again."""
    due = time.time() + 4
    for i in range(200):
        moves_app.record_run.enqueue_at(due, i, 0.0, tenant="mover")
    moves_app.record_run.enqueue_many([(i, 0.0) for i in range(200, 250)], tenant="mover")
    killed(mover_cli(cluster, zk_root, "mover", "--to", "p2", "--jobs-only", crash_at="before_copy_data"))
    killed(mover_cli(cluster, zk_root, "mover", "--rollback", crash_at="rollback_written"))
    ws = workers(zk, ["p1", "p2"])
    try:
        # the stall: the scheduled jobs come due (on Redis' clock) and run on p1 while the
        # rollback is stopped (their copies on p2 are what the rollback must not run again)
        # the stall: the scheduled jobs come due while the rollback is stopped. Nothing moves
        # meanwhile (they stay held on p1 and carried on p2), so the event is the due time
        # itself, read on the clock that decides it: p1's Redis (not this process's)
        r1 = redis.Redis.from_url(pods.pod("p1").redis_url)
        wait_until(lambda: (lambda t: t[0] + t[1] / 1e6)(r1.time()) > due + 1.0, timeout=15,
                   what="the scheduled jobs to come due on p1's Redis clock")
        r1.close()
        res = mover_cli(cluster, zk_root, "mover", "--rollback")
        counts = drain(pods, 250)
    finally:
        for w in ws:
            w.stop()
    assert_once(counts, set(range(250)))
    ok(res)
    assert store.where("mover").pod == "p1" and store.where("mover").move is None


def test_a_paused_worker_of_the_old_pod_cannot_commit_after_the_move(
        zk: ZK, cluster: Any, zk_root: str, store: TopologyStore, client: PodClient,  # noqa: F811
        pods: Topology, tmp_path: Path) -> None:
    """(d) a worker of p1 is SIGSTOPped while running a job of the tenant, through the
    whole move; it wakes after the flip and must not commit to p1's shard."""
    log = tmp_path / "p1-worker.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PODJOBS_MOVE_CRASH_AT", None)
    p1 = subprocess.Popen(
        [sys.executable, "-m", "podjobs.cli", "worker", "--pod", "p1", "--zk",
         cluster.topology.zookeeper + zk_root, "--app", "tests.apps.moves_app", "--queues", "default",
         "--concurrency", "2", "--heartbeat-ttl", "1", "--poll-interval", "0.05", "--log-level", "info"],
        cwd=REPO, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    r1 = redis.Redis.from_url(pods.pod("p1").redis_url)
    ws: list[Any] = []
    try:
        wait_until(lambda: r1.scard(keys.WORKERS) == 1, timeout=15, what="the p1 worker to register")
        moves_app.record_run.enqueue(1, 2.0, tenant="mover")  # sleeps 2 s, then writes its row
        # started, not only reserved (a reserved job the worker had not started when it was
        # paused is never started after its reap): the worker's busy list names the job
        wait_until(lambda: any(b"record_run" in (r1.hget(k, "busy") or b"")
                               for k in r1.scan_iter(match=keys.worker_info("*"))),
                   what="the job to start on the p1 worker")
        p1.send_signal(signal.SIGSTOP)
        ws = workers(zk, ["p2"])
        Mover(zk, jobs_only=True, quiesce_timeout=20, progress=lambda m: None).move("mover", "p2")
        flipped = time.time()
        wait_until(lambda: ledger(pods)[1] >= 1, timeout=15, what="the carried job to run on p2")
        p1.send_signal(signal.SIGCONT)
        wait_until(lambda: "failed" in log.read_text() or ledger(pods)[1] >= 2, timeout=15,
                   what="the woken p1 worker to finish its attempt")
        wait_until(lambda: not leftovers(pods), timeout=10, what="nothing left queued")
    finally:
        if p1.poll() is None:
            p1.send_signal(signal.SIGCONT)
        stop_proc(p1)
        for w in ws:
            w.stop()
        r1.close()
    rows = [r for r in runs(pods) if r[0] == "mover"]
    late = [r for r in rows if r[4] == "p1" and r[3] > flipped]
    assert not late, f"{len(late)} commit(s) on p1's shard {late[0][3] - flipped:.1f} s after the flip"
    assert [(r[1], r[4]) for r in rows] == [(1, "p2")]
    assert "TenantFenced" in log.read_text()  # its commit was refused, not lost in a crash
