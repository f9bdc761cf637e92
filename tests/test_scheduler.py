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

from podjobs.infra.topofile import Topology
from podjobs.pods.podworker import PodWorker
from podjobs.pods.topology import register_topology
from podjobs.pods.zk import ZK
from podjobs.scheduler import report
from podjobs.scheduler.leader import contenders, leader_info
from podjobs.scheduler.migrate import close_zk_clients, pod_worker
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
    ws = [pod_worker(zk, name, fast_config(concurrency=2)) for name in sorted(shards)]
    for w in ws:
        w.start()
    yield ws
    for w in ws:
        w.stop()
    close_zk_clients()


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
    st = report.collect(zk)
    assert st["head"] == "0005" and st["leader"]["id"] == "s1"
    assert all(s["current"] == "0005" and not s["pending"] and not s["running"]
               for s in st["shards"])


def control(url: str, rev: str, fail: int = 0, pause: float = 0.1) -> None:
    e = create_engine(url)
    with e.begin() as c:
        c.execute(text("REPLACE INTO mig_control (rev, fail, pause) VALUES (:r, :f, :p)"),
                  {"r": rev, "f": fail, "p": pause})
    e.dispose()


def leader_is(zk: ZK, name: str) -> bool:
    info = leader_info(zk)
    return info is not None and info.get("id") == name


def cli(zk_spec: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podjobs.cli", *args, "--zk", zk_spec],
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=timeout)


def leader_and_standby(zk: ZK, shards: dict[str, str],
                       schedulers: Schedulers) -> subprocess.Popen[bytes]:
    """Slow revisions (0.25 s a step), s1 leading and s2 standing by; returns s1."""
    for url in shards.values():
        for rev in ORDER:
            control(url, rev, pause=0.25)
    s1 = schedulers.start("s1")
    wait_until(lambda: leader_is(zk, "s1"), 20, "s1 leads")
    schedulers.start("s2")
    wait_until(lambda: len(contenders(zk)) == 2, 20, "s2 stands by")
    return s1


def test_sigkill_of_the_leader_mid_rollout_the_standby_finishes_nothing_applied_twice(
        zk: ZK, shards: dict[str, str], workers: list[PodWorker], schedulers: Schedulers) -> None:
    s1 = leader_and_standby(zk, shards, schedulers)
    res = cli(schedulers.zk_spec, "scheduler", "status")
    assert "leader: s1" in res.stdout and "standing by: s2" in res.stdout, res.stdout
    store = RunStore(zk)
    wait_until(lambda: store.get("p1", "0002") is not None, 30, "the rollout is under way")
    assert not all_complete(zk, sorted(shards))
    s1_term = leader_info(zk)["term"]  # type: ignore[index]
    s1.send_signal(signal.SIGKILL)
    s1.wait(10)
    # how fast the standby takes over is a figure of bench/scheduler.py (failover per session
    # timeout); here: it does, in a newer term, within a bound of a few session timeouts
    wait_until(lambda: leader_is(zk, "s2"), SESSION * 3 + 5, "s2 takes over")
    assert leader_info(zk)["term"] > s1_term  # type: ignore[index]
    wait_until(lambda: all_complete(zk, sorted(shards)), 60, "every shard at head")
    for url in shards.values():
        check_applied_once_in_order(url)
    terms = {r.queued_by for p in shards for r in store.for_pod(p).values()}
    assert terms == {"s1", "s2"}, terms


def test_a_leader_paused_past_its_session_applies_nothing_after_it_resumes(
        zk: ZK, shards: dict[str, str], workers: list[PodWorker], schedulers: Schedulers) -> None:
    s1 = leader_and_standby(zk, shards, schedulers)
    s1_term = leader_info(zk)["term"]  # type: ignore[index]
    store = RunStore(zk)
    wait_until(lambda: store.get("p1", "0002") is not None, 30, "the rollout is under way")
    s1.send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    wait_until(lambda: leader_is(zk, "s2"), SESSION * 3 + 5, "s2 takes over")
    # s2 acts as the only leader before s1 wakes: it has queued a revision itself
    wait_until(lambda: any(r.queued_by == "s2" for p in shards for r in store.for_pod(p).values()),
               30, "s2 to queue a revision")
    s1.send_signal(signal.SIGCONT)
    wait_until(lambda: "no longer leader" in schedulers.log("s1") or
               "stopped leading" in schedulers.log("s1"), 15, "s1 notices it lost the lead")
    wait_until(lambda: all_complete(zk, sorted(shards)), 60, "every shard at head")
    for url in shards.values():
        check_applied_once_in_order(url)
    for p in shards:
        for r in store.for_pod(p).values():
            if r.queued_term == s1_term:
                assert r.queued_at < stopped_at, f"paused leader s1 queued {r.revision} on {p}"
    assert leader_is(zk, "s2")
    assert s1.poll() is None, "the old leader keeps running as a standby"


def test_killing_the_connection_that_holds_get_lock_stops_the_runner_before_its_next_step(
        zk: ZK, shards: dict[str, str], workers: list[PodWorker], schedulers: Schedulers,
        cluster: Any) -> None:
    control(shards["p1"], "0002", pause=migration_probe.HOLD)  # held before its first step
    schedulers.start("s1")
    e = create_engine(shards["p1"], isolation_level="AUTOCOMMIT")  # no snapshot: see new rows
    with e.connect() as c:
        wait_until(lambda: ("0002", "start") in [(r, ev) for r, ev, _ in migration_probe.events(c)],
                   30, "0002 started on p1")
        holder = c.execute(text("SELECT IS_USED_LOCK(CONCAT('podjobs_migrations.', DATABASE()))")).scalar()
        assert holder is not None
        c.execute(text(f"KILL {int(holder)}"))
    store = RunStore(zk)
    run = wait_until(lambda: (r := store.get("p1", "0002")) is not None and r.state == "failed"
                     and r, 20, "the run fails")
    assert "Lost connection" in run.error or "2013" in run.error or "gone away" in run.error, run.error
    rev, events, history = shard_state(shards["p1"])
    assert rev == "0001"
    assert [ev for r, ev, _ in events if r == "0002"] == ["start"], events
    assert history[-1]["revision"] == "0002" and history[-1]["state"] == "failed"
    # the halt keeps 0002 off the other pods; wait says failed (exit 1)
    res = cli(schedulers.zk_spec, "migrations", "wait", "--timeout", "10", "--interval", "0.2")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "p1: 0002 failed" in res.stdout
    # p2 and p3 finish 0001 (their own pace: a loaded machine may still be at it), and the
    # halt keeps 0002 off them
    wait_until(lambda: all_complete(zk, ["p2", "p3"], "0001"), 30, "0001 on p2 and p3")
    assert all(shard_state(shards[p])[0] == "0001" for p in ("p2", "p3"))
    assert store.get("p2", "0002") is None and store.get("p3", "0002") is None
    e.dispose()


def test_a_failing_revision_halts_the_rollout_is_reported_and_retry_goes_on(
        zk: ZK, shards: dict[str, str], workers: list[PodWorker], schedulers: Schedulers) -> None:
    control(shards["p2"], "0003", fail=1)
    schedulers.start("s1", "--wave", "1")
    store = RunStore(zk)
    run = wait_until(lambda: (r := store.get("p2", "0003")) is not None and r.state == "failed"
                     and r, 40, "0003 fails on p2")
    assert "fails at step 1" in run.error
    # a timeout while it is halted is still a failure (1), reported with the error
    res = cli(schedulers.zk_spec, "migrations", "wait", "--timeout", "5", "--interval", "0.2")
    assert res.returncode == 1 and "p2: 0003 failed" in res.stdout, res.stdout + res.stderr
    st = json.loads(cli(schedulers.zk_spec, "migrations", "status", "--json").stdout)
    p2 = next(s for s in st["shards"] if s["pod"] == "p2")
    assert p2["current"] == "0002" and p2["failures"][0]["revision"] == "0003"
    assert "fails at step 1" in p2["failures"][0]["error"]
    assert "0003" in st["halts"]
    # p3 comes after p2: 0003 never started there
    assert shard_state(shards["p3"])[0] == "0002"
    text_status = cli(schedulers.zk_spec, "migrations", "status").stdout
    assert "halted: 0003" in text_status and "fails at step 1" in text_status
    # waiting for an earlier revision that is everywhere succeeds (0)
    res = cli(schedulers.zk_spec, "migrations", "wait", "--revision", "0002", "--timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    # fix the cause, retry: the rollout goes on to head
    control(shards["p2"], "0003", fail=0)
    res = cli(schedulers.zk_spec, "migrations", "retry", "0003")
    assert res.returncode == 0, res.stderr
    res = cli(schedulers.zk_spec, "migrations", "wait", "--timeout", "60", "--interval", "0.2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert at_head(shards)


def test_wait_times_out_with_exit_code_3_and_prints_progress(
        zk: ZK, shards: dict[str, str], workers: list[PodWorker], schedulers: Schedulers) -> None:
    control(shards["p1"], "0001", pause=migration_probe.HOLD)  # the rollout cannot finish
    schedulers.start("s1")
    res = cli(schedulers.zk_spec, "migrations", "wait", "--timeout", "1.5", "--interval", "0.2")
    assert res.returncode == 3, res.stdout + res.stderr
    assert "timed out" in res.stdout


def test_a_data_migration_runs_its_backfill_and_completes_only_when_it_is_done(
        zk: ZK, shards: dict[str, str], workers: list[PodWorker], schedulers: Schedulers) -> None:
    from tests.apps import data_migration_app  # noqa: F401 - the workers run its backfill

    schedulers.start("s1", "--migrations", str(REPO / "tests" / "apps" / "migrations_data"),
                     "--wave", "2")
    store = RunStore(zk)
    seen_progress = []

    def done() -> bool:
        st = report.collect(zk)
        for s in st["shards"]:
            for r in s["running"]:
                if r["backfill_job"]:
                    seen_progress.append((s["pod"], r["progress"]))
        return all((r := store.get(p, "d002")) is not None and r.state == "complete"
                   for p in shards)

    wait_until(done, 60, "d002 complete everywhere")
    assert seen_progress, "status never showed a running backfill"
    for url in shards.values():
        e = create_engine(url)
        with e.connect() as c:
            labels = c.execute(text("SELECT id, label FROM items ORDER BY id")).all()
        e.dispose()
        assert len(labels) == 200 and all(lbl == f"item-{i}" for i, lbl in labels)
    for p in shards:
        run = store.get(p, "d002")
        assert run is not None and run.backfill_job
        assert run.extra["progress"]["state"] == "succeeded"


def spawn_pod_worker(zk_spec: str, pod: str, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "podjobs.cli", "worker", "--pod", pod, "--zk", zk_spec,
           "--app", "tests.apps.core_app", "--concurrency", "2", "--heartbeat-ttl", "1",
           "--poll-interval", "0.05", "--log-level", "info"]
    return subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def test_a_runner_paused_past_its_session_is_fenced_off_and_applies_nothing(
        zk: ZK, shards: dict[str, str], schedulers: Schedulers, tmp_path: Path) -> None:
    control(shards["p1"], "0001", pause=migration_probe.HOLD)  # held before its first step
    w1 = spawn_pod_worker(schedulers.zk_spec, "p1", tmp_path / "w1.log")
    w2 = None
    try:
        schedulers.start("s1")
        e = create_engine(shards["p1"], isolation_level="AUTOCOMMIT")
        with e.connect() as c:
            wait_until(lambda: ("0001", "start") in [(r, ev) for r, ev, _ in
                                                     migration_probe.events(c)],
                       30, "0001 started on p1")
        w1.send_signal(signal.SIGSTOP)
        w2 = spawn_pod_worker(schedulers.zk_spec, "p1", tmp_path / "w2.log")
        store = RunStore(zk)
        # w2 recovers the job, takes the ZooKeeper lock once w1's session expired, kills w1's
        # connection that still holds GET_LOCK, raises the fence and finds the revision half done
        run = wait_until(lambda: (r := store.get("p1", "0001")) is not None
                         and r.state == "failed" and r, 30, "the take-over fails the run")
        assert "stopped midway" in run.error, run.error
        assert "killing that stale runner's connection" in (tmp_path / "w2.log").read_text()
        control(shards["p1"], "0001", pause=0.1)  # released: a w1 that could go on would step
        w1.send_signal(signal.SIGCONT)
        wait_until(lambda: "migration 0001 on p1:" in (tmp_path / "w1.log").read_text(), 15,
                   "w1 wakes and stops")
        rev, events, history = shard_state(shards["p1"])
        assert rev is None
        assert [ev for r, ev, _ in events] == ["start"], events  # no step by the paused runner
        fences = [h["fence"] for h in history]
        assert store.get("p1", "0001").error == run.error  # type: ignore[union-attr]
        with e.connect() as c:
            shard_fence = c.execute(text("SELECT fence FROM podjobs_migration_fence")).scalar()
        assert shard_fence == run.fence and shard_fence > min(fences)
        # the operator retries: the rollout goes on
        res = cli(schedulers.zk_spec, "migrations", "retry", "0001")
        assert res.returncode == 0, res.stderr
        wait_until(lambda: (r := store.get("p1", "0001")) is not None and r.state == "complete",
                   30, "0001 complete on p1 after the retry")
        e.dispose()
    finally:
        for w in (w1, w2):
            if w is not None:
                w.send_signal(signal.SIGCONT)
                stop_proc(w)


def test_a_revision_that_cannot_load_fails_before_any_ddl(
        zk: ZK, shards: dict[str, str], workers: list[PodWorker], schedulers: Schedulers) -> None:
    schedulers.start("s1", "--migrations", str(REPO / "tests" / "apps" / "migrations_bad"))
    store = RunStore(zk)
    run = wait_until(lambda: (r := store.get("p1", "b001")) is not None and r.state == "failed"
                     and r, 30, "b001 fails on p1")
    assert "return the call of an iteration job" in run.error, run.error
    rev, _, history = shard_state(shards["p1"])
    assert rev is None and history == []  # nothing ran, not even the run row
    e = create_engine(shards["p1"])
    with e.connect() as c:
        assert not c.dialect.has_table(c, "never_created")
    e.dispose()
    assert "b001" in store.halts() and store.get("p2", "b001") is None


def test_a_busy_shard_lock_puts_the_job_back_instead_of_failing(
        zk: ZK, shards: dict[str, str], workers: list[PodWorker], schedulers: Schedulers,
        pods: Topology) -> None:
    from podjobs.backend import RedisBackend
    from podjobs.errors import JobNotFound
    from podjobs.ops import Inspector
    from podjobs.scheduler import paths

    held = zk.kazoo_client.Lock(paths.lock(zk, "p1"), "an operator")
    assert held.acquire(timeout=5)
    try:
        schedulers.start("s1")
        store = RunStore(zk)
        run = wait_until(lambda: store.get("p1", "0001"), 20, "0001 queued on p1")
        # the job waits for the lock (5 s), then must be put back (scheduled again), not fail
        inspector = Inspector(RedisBackend(pods.pod("p1").redis_url))

        def put_back() -> bool:
            try:
                return inspector.find_job(run.job_id).where == "scheduled"
            except JobNotFound:
                return False

        wait_until(put_back, 30, "the migration job to be put back after its lock wait")
        run = store.get("p1", "0001")
        assert run is not None and run.state == "queued", run
        assert inspector.stats().get("failed", 0) == 0
    finally:
        held.release()
    wait_until(lambda: all_complete(zk, sorted(shards)), 60, "every shard at head")
    assert all(r.attempts == 1 for p in shards for r in store.for_pod(p).values())
    stats = Inspector(RedisBackend(pods.pod("p1").redis_url)).stats()
    assert stats.get("failed", 0) == 0, stats  # put back (Reenqueue), never a failed attempt


def test_a_backfill_that_never_arrived_is_enqueued_again_by_the_leader(
        zk: ZK, shards: dict[str, str], workers: list[PodWorker], schedulers: Schedulers) -> None:
    """A runner died after recording the backfill's id and before enqueueing it."""
    from podjobs.scheduler.revisions import Revisions, apply
    from podjobs.scheduler.runs import Run, RunState
    from tests.apps import data_migration_app  # noqa: F401 - the workers run its backfill

    directory = str(REPO / "tests" / "apps" / "migrations_data")
    revs = Revisions(directory)
    e = create_engine(shards["p1"], isolation_level="AUTOCOMMIT")
    with e.connect() as c:
        apply(c, revs, "d001")
        apply(c, revs, "d002")
    e.dispose()
    store = RunStore(zk)
    old = time.time() - 60
    store.create(Run("p1", "d001", RunState.COMPLETE, job_id="j1", queued_at=old, finished_at=old))
    store.create(Run("p1", "d002", RunState.RUNNING, job_id="j2", queued_at=old, started_at=old,
                     backfill_job="01BACKFILLNEVERARRIVED0000", extra={"backfill_queued_at": old}))
    schedulers.start("s1", "--migrations", directory)
    wait_until(lambda: (r := store.get("p1", "d002")) is not None and r.state == "complete",
               40, "d002 complete on p1 once the backfill ran")
    e = create_engine(shards["p1"])
    with e.connect() as c:
        labels = c.execute(text("SELECT id, label FROM items ORDER BY id")).all()
    e.dispose()
    assert len(labels) == 200 and all(lbl == f"item-{i}" for i, lbl in labels)
    assert "was never enqueued; enqueued it" in schedulers.log("s1")


def test_cancel_stops_a_running_revision_and_skip_stamps_a_fixed_one(
        zk: ZK, shards: dict[str, str], workers: list[PodWorker], schedulers: Schedulers) -> None:
    # held before its first step until released: the cancel lands while it is held, however
    # long the cancel command takes to start (it used to sleep 2 s, which a loaded machine
    # could outlast: step1 then ran before the cancel was seen)
    control(shards["p1"], "0002", pause=migration_probe.HOLD)
    control(shards["p2"], "0003", fail=1)
    schedulers.start("s1", "--wave", "2")
    store = RunStore(zk)
    e = create_engine(shards["p1"], isolation_level="AUTOCOMMIT")
    with e.connect() as c:
        wait_until(lambda: ("0002", "start") in [(r, ev) for r, ev, _ in migration_probe.events(c)],
                   30, "0002 started (and held) on p1")
    e.dispose()
    wait_until(lambda: (r := store.get("p1", "0002")) is not None and r.state == "running",
               30, "0002 running on p1")
    res = cli(schedulers.zk_spec, "migrations", "cancel", "0002")
    assert res.returncode == 0 and "p1: stop requested" in res.stdout, res.stdout + res.stderr
    run = wait_until(lambda: (r := store.get("p1", "0002")) is not None
                     and r.state == "cancelled" and r, 20, "0002 cancelled on p1")
    assert "cancelled by an operator" in run.error
    rev, events, _ = shard_state(shards["p1"])
    assert rev == "0001" and [ev for r, ev, _ in events if r == "0002"] == ["start"], events
    assert cli(schedulers.zk_spec, "migrations", "wait", "--timeout", "5").returncode == 1
    # go on: 0002 again, then 0003 fails on p2 (canary p1 passed it)
    control(shards["p1"], "0002", pause=0.1)
    assert cli(schedulers.zk_spec, "migrations", "retry", "0002").returncode == 0
    wait_until(lambda: (r := store.get("p2", "0003")) is not None and r.state == "failed",
               40, "0003 fails on p2")
    # an operator creates the table by hand on p2, then skips the revision there
    e = create_engine(shards["p2"])
    with e.begin() as c:
        c.execute(text("CREATE TABLE invoices (id INT PRIMARY KEY, account_id INT, cents BIGINT)"))
    e.dispose()
    res = cli(schedulers.zk_spec, "migrations", "skip", "0003", "--pod", "p2",
              "--migrations", MIGRATIONS)
    assert res.returncode == 0, res.stdout + res.stderr
    skipped = store.get("p2", "0003")
    assert skipped is not None and skipped.state == "complete" and skipped.skipped
    assert "0003" not in store.halts()
    res = cli(schedulers.zk_spec, "migrations", "wait", "--timeout", "60", "--interval", "0.2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert at_head(shards)
    _, events, history = shard_state(shards["p2"])
    assert [h["revision"] for h in history if h["state"] == "complete"] == ["0001", "0002", "0004",
                                                                           "0005"]


def test_a_dead_backfill_fails_the_revision_and_retry_runs_a_new_one(
        zk: ZK, shards: dict[str, str], workers: list[PodWorker], schedulers: Schedulers) -> None:
    from tests.apps import data_migration_app  # noqa: F401 - the workers run its backfill

    control(shards["p1"], "d002", fail=1)
    schedulers.start("s1", "--migrations", str(REPO / "tests" / "apps" / "migrations_data"))
    store = RunStore(zk)
    run = wait_until(lambda: (r := store.get("p1", "d002")) is not None and r.state == "failed"
                     and r, 40, "d002 fails on p1 once its backfill is dead")
    assert "died" in run.error and "the backfill fails" in run.error, run.error
    assert shard_state(shards["p1"])[0] == "d002"  # the schema step stays applied
    assert store.get("p2", "d002") is None  # halted: p2 comes after the canary
    control(shards["p1"], "d002", fail=0)
    res = cli(schedulers.zk_spec, "migrations", "retry", "d002")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_until(lambda: all((r := store.get(p, "d002")) is not None and r.state == "complete"
                           for p in shards), 60, "d002 complete everywhere")
    retried = store.get("p1", "d002")
    assert retried is not None and retried.backfill_job != run.backfill_job
    e = create_engine(shards["p1"])
    with e.connect() as c:
        labels = c.execute(text("SELECT id, label FROM items ORDER BY id")).all()
    e.dispose()
    assert len(labels) == 200 and all(lbl == f"item-{i}" for i, lbl in labels)


def test_a_half_applied_revision_is_shown_resumed_when_resumable_and_refused_when_not(
        zk: ZK, shards: dict[str, str], workers: list[PodWorker], schedulers: Schedulers) -> None:
    """MySQL commits each DDL statement: h002 and h003 fail after their first one on p1."""
    control(shards["p1"], "h002", fail=2)
    control(shards["p1"], "h003", fail=2)
    schedulers.start("s1", "--migrations", str(REPO / "tests" / "apps" / "migrations_half"),
                     "--canary", "p1", "--wave", "2")
    store = RunStore(zk)
    wait_until(lambda: (r := store.get("p1", "h002")) is not None and r.state == "failed", 40,
               "h002 fails on p1 after its first statement")
    st = json.loads(cli(schedulers.zk_spec, "migrations", "status", "--json").stdout)
    (failure,) = next(s for s in st["shards"] if s["pod"] == "p1")["failures"]
    applied = failure["applied"]
    assert len(applied) == 3 and "ALTER TABLE gadgets ADD" in applied[1], applied  # start, DDL, step1
    assert "h002 applied 2: ALTER TABLE gadgets ADD" in cli(schedulers.zk_spec, "migrations",
                                                            "status").stdout
    # fixed: the retry resumes after the three statements (h002 declares resumable = True)
    control(shards["p1"], "h002", fail=0)
    assert cli(schedulers.zk_spec, "migrations", "retry", "h002").returncode == 0
    wait_until(lambda: all((r := store.get(p, "h002")) is not None and r.state == "complete"
                           for p in shards), 40, "h002 complete everywhere")
    assert store.get("p1", "h002").extra["resumed_after"] == 3  # type: ignore[union-attr]
    _, events, history = shard_state(shards["p1"])
    assert [e for r, e, _ in events if r == "h002"] == ["start", "step1", "step2", "end"]
    h002 = [h for h in history if h["revision"] == "h002"]
    assert [len(h["applied"]) for h in h002] == [3, 6], h002
    # h003 is not resumable: its retry refuses to run it again and says what to do
    wait_until(lambda: (r := store.get("p1", "h003")) is not None and r.state == "failed", 40,
               "h003 fails on p1 after its first statement")
    control(shards["p1"], "h003", fail=0)
    assert cli(schedulers.zk_spec, "migrations", "retry", "h003").returncode == 0
    run = wait_until(lambda: (r := store.get("p1", "h003")) is not None and r.state == "failed"
                     and "half applied" in r.error and r, 40, "the retry refuses h003")
    assert "resumable = True" in run.error and "migrations skip h003" in run.error
    assert [e for r, e, _ in shard_state(shards["p1"])[1] if r == "h003"] == ["start", "step1"]


def test_a_wave_is_queued_in_one_transaction_and_a_record_made_meanwhile_is_left_alone(
        zk: ZK, shards: dict[str, str], pods: Topology) -> None:
    """The leader creates a wave's run records in one term transaction, then enqueues each
    record's job on its pod's Redis; a record that exists already (an operator's skip made
    it) makes that transaction fail, and the runs are then queued one by one, that one left
    as it is."""
    import redis

    from podjobs.fairshare import ready_jobs
    from podjobs.pods.topology import TopologyStore
    from podjobs.scheduler.migrations import MigrationsConfig, MigrationsDuty
    from podjobs.scheduler.runstate import RunState, new_run
    from tests.test_periodic import make_term

    duty = MigrationsDuty(zk, MigrationsConfig(directory=MIGRATIONS, zk_spec="unused"))
    store = RunStore(zk)
    term = make_term(zk)
    topo = TopologyStore(zk).pods()

    def jobs(pod: str) -> list[str]:
        r = redis.Redis.from_url(topo[pod].redis_url)
        return [json.loads(x)["id"] for x in ready_jobs(r, "default")]

    try:
        duty._queue_new(term, [("p1", "0001"), ("p2", "0001")], topo)
        for pod in ("p1", "p2"):
            run = store.get(pod, "0001")
            assert run is not None and run.state == RunState.QUEUED
            assert run.queued_term == term.fence and jobs(pod) == [run.job_id]
        assert store.create(new_run("p3", "0001", RunState.COMPLETE, now=time.time(),
                                    skipped=True))
        duty._queue_new(term, [("p3", "0001"), ("p2", "0002")], topo)
        p3 = store.get("p3", "0001")
        assert p3 is not None and p3.state == RunState.COMPLETE and p3.skipped
        assert jobs("p3") == []
        p2 = store.get("p2", "0002")
        assert p2 is not None and p2.state == RunState.QUEUED and p2.job_id in jobs("p2")
    finally:
        duty.close()


def test_shard_connections_share_one_preferred_tls_context(pods: Topology) -> None:
    """PyMySQL builds a TLS context (the system's CA bundle loaded: 20-60 ms of CPU) for every
    connection given no TLS option; podjobs' engines build it once per process. A PyMySQL
    that renames the method this overrides fails here."""
    from podjobs import db

    e = db._make(pods.pods[0].shard_url)
    try:
        with e.connect() as c1, e.connect() as c2:
            a, b = c1.connection.dbapi_connection, c2.connection.dbapi_connection
            assert a is not b
            ca, cb = getattr(a, "ctx", None), getattr(b, "ctx", None)
            assert ca is not None and ca is cb
    finally:
        e.dispose()


def test_a_runner_reads_its_run_record_again_only_after_it_changed(zk: ZK) -> None:
    """The check before each statement reads the run record (its cancel flag) the first time,
    then only after a watch said it changed: a cancel is still seen at the next statement."""
    from podjobs.scheduler.migrate import _Watch
    from podjobs.scheduler.runstate import RunState, new_run

    store = RunStore(zk)
    assert store.create(new_run("p1", "0001", RunState.QUEUED, now=time.time(), job_id="j"))
    reads: list[str] = []
    read = zk.read_watched

    def counted(paths: Any, watcher: Any, timeout: float | None = None) -> Any:
        reads.extend(paths)
        return read(paths, watcher, timeout)

    zk.read_watched = counted  # type: ignore[method-assign]
    w = _Watch(zk, store, "p1", "0001")
    try:
        assert w.reason() is None and w.reason() is None and w.reason() is None
        assert len(reads) == 1
        run = store.get("p1", "0001")
        assert run is not None
        run.cancel_requested = True
        store.update(run)
        wait_until(lambda: w._stale, what="the watch on the run record to fire")
        assert w.reason() == "cancelled by an operator"
        assert len(reads) == 2
    finally:
        w.close()
        zk.read_watched = read  # type: ignore[method-assign]


def test_ensure_tables_makes_both_tables_and_adds_applied_to_an_old_run_table(
        pods: Topology) -> None:
    from podjobs.scheduler.runs import FENCE_TABLE, SHARD_TABLE, ensure_tables

    e = create_engine(pods.pods[0].shard_url)
    try:
        with e.connect() as raw:
            c = raw.execution_options(isolation_level="AUTOCOMMIT")
            c.execute(text(f"CREATE TABLE {SHARD_TABLE} (id BIGINT AUTO_INCREMENT PRIMARY KEY,"
                           f" revision VARCHAR(64) NOT NULL)"))  # made before `applied`
            ensure_tables(c)
            ensure_tables(c)
            cols = {r[0] for r in c.execute(text(f"SHOW COLUMNS FROM {SHARD_TABLE}"))}
            assert cols == {"id", "revision", "applied"}
            assert c.execute(text(f"SELECT COUNT(*) FROM {FENCE_TABLE}")).scalar() == 0
            c.execute(text(f"DROP TABLE {SHARD_TABLE}, {FENCE_TABLE}"))
            ensure_tables(c)  # a new shard: both made, `applied` included
            cols = {r[0] for r in c.execute(text(f"SHOW COLUMNS FROM {SHARD_TABLE}"))}
            assert "applied" in cols and "fence" in cols
            assert c.execute(text(f"SELECT COUNT(*) FROM {FENCE_TABLE}")).scalar() == 0
    finally:
        e.dispose()


def test_the_version_row_moves_only_from_the_revision_before_and_alembic_reads_it(
        pods: Topology) -> None:
    """revisions.apply records a step itself on MySQL (one statement, not alembic's stamp):
    alembic reads the table it makes, and a shard not at the revision before is refused."""
    from alembic.runtime.migration import MigrationContext

    from podjobs.errors import ConfigurationError
    from podjobs.scheduler.revisions import Revisions, _advance, current_revision

    revs = Revisions(MIGRATIONS)
    e = create_engine(pods.pods[0].shard_url)
    try:
        with e.connect() as raw:
            c = raw.execution_options(isolation_level="AUTOCOMMIT")
            _advance(c, revs.get("0001"))
            for wrong in ("0001", "0003"):  # a second first row; a step from 0002
                with pytest.raises(ConfigurationError, match="no longer at"):
                    _advance(c, revs.get(wrong))
            _advance(c, revs.get("0002"))
            assert current_revision(c) == "0002"
            assert MigrationContext.configure(c).get_current_revision() == "0002"
    finally:
        e.dispose()
