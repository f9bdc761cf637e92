"""ZooKeeper as a three-server ensemble, a follower and then the leader killed (issue 17 item 5).

`zk_ensemble_kill9`, on the session's pods (their Redis servers and MariaDB shards) but with
the directory in a private three-member ensemble (infra/ensemble.py) instead of the session's
standalone ZooKeeper:

1. the topology is registered in the ensemble; SPREAD tenants over the three pods and TENANT
   on p1; one worker process per pod (`podjobs worker --pod`, which also runs the migration
   job), one scheduler process (`podjobs scheduler --migrations`, the five test revisions,
   0003 and 0005 held on every shard by their mig_control rows), and in this process a
   routed client (`pods.router.connect`) enqueuing the tenants' jobs one at a time;
2. once 0003 runs and jobs flow: kill -9 a follower; with it down, `podjobs tenants move
   TENANT --to p2` (a subprocess) and 0003 released; the move must finish and every shard
   reach 0003; then the follower comes back;
3. kill -9 the leader (the ensemble elects another; every session on it moves to another
   member); `tenants move TENANT --to p1` and 0005 released; the move must finish (a
   refusal while no member leads is resumed with `--resume`, at most RESUMES times) and
   every shard reach 0005; then the old leader comes back;
4. the end: every acknowledged job finished once.

"Every client recovers", checked after each kill: the routed client acknowledges an enqueue
again within RECOVER_S (the seconds it took are logged), every worker process starts a job
after the leader's kill, the scheduler finishes the rollout, the mover its move, and the
client's directory sees the tenant where the last move put it. A failure of any of these
is a note (so a failure of the scenario); lost and twice come from the ledger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine

from podjobs.errors import PodjobsError
from podjobs.infra.ensemble import Ensemble
from podjobs.infra.topofile import Topology
from podjobs.pods.router import PodClient, connect
from podjobs.pods.topology import TopologyStore, register_topology
from podjobs.pods.zk import ZK
from podjobs.scheduler.runs import RunStore
from tests.apps import migration_probe
from tests.chaos import app
from tests.chaos import ledger as ledger_mod
from tests.chaos.checker import Observation
from tests.chaos.cluster_scenarios import ClusterCtx
from tests.chaos.harness import Harness
from tests.chaos.scenarios import Size
from tests.helpers import REPO, wait_until
from tests.test_scheduler import Schedulers, control

log = logging.getLogger(__name__)

TENANT = "shop-z"
SPREAD = 6
HELD = ("0003", "0005")
RECOVER_S = 10.0
RESUMES = 3
JOB_S = 0.005
ENQUEUE_EVERY = 0.01
#: the enqueues' bound (about 100 a second: the run stops them long before)
LIMIT = 30_000


class Enqueuer(threading.Thread):
    """Routed enqueues, one at a time, round the tenants, until stopped (or `limit` sent);
    each acknowledged id to the ledger, with time.monotonic() of the last acknowledgement."""

    def __init__(self, client: PodClient, ledger: ledger_mod.Ledger, tenants: list[str],
                 limit: int) -> None:
        super().__init__(name="ensemble-enqueuer", daemon=True)
        self.client, self.ledger, self.tenants, self.limit = client, ledger, tenants, limit
        self.stop = threading.Event()
        self.acked = 0
        self.refused = 0
        self.mark = float("inf")  # time.monotonic() of the last fault
        self.first_after: float | None = None  # the first acknowledgement after it
        self.first_error = ""

    def run(self) -> None:
        i = 0
        while not self.stop.is_set() and i < self.limit:
            try:
                h = self.client.enqueue_call(app.work.call(JOB_S),
                                             tenant=self.tenants[i % len(self.tenants)])
            except PodjobsError as exc:  # not acknowledged
                self.refused += 1
                self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"
            else:
                self.ledger.record("enq", h.id)
                self.acked += 1
                now = time.monotonic()
                if self.first_after is None and now > self.mark:
                    self.first_after = now
            i += 1
            self.stop.wait(ENQUEUE_EVERY)

    def watch(self, t: float) -> None:
        """A fault happens at `t`: note the first acknowledgement after it."""
        self.first_after, self.mark = None, t

    def acked_after(self, timeout: float) -> float | None:
        """Seconds from the fault to the first acknowledgement after it, None if none
        within `timeout` of the fault."""
        deadline = self.mark + timeout
        while self.first_after is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first = self.first_after
        return None if first is None or first > deadline else first - self.mark


def _move(spec: str, zk: ZK, to: str, logfile: Path, notes: list[str]) -> int:
    """`podjobs tenants move TENANT --to POD --jobs-only`; after a failure, `--resume` when
    the move was recorded, else the move again. Returns the retries."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = ["--to", to, "--jobs-only"]
    for attempt in range(RESUMES + 1):
        cmd = [sys.executable, "-m", "podjobs.cli", "tenants", "move", TENANT, *args,
               "--zk", spec, "--timeout", "20"]
        res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=90)
        with open(logfile, "a") as f:
            f.write(f"$ move {' '.join(args)} -> {res.returncode}\n{res.stdout}{res.stderr}\n")
        if res.returncode == 0:
            return attempt
        entry = None
        with contextlib.suppress(Exception):
            entry = TopologyStore(zk).tenant(TENANT)
        args = ["--resume"] if entry is not None and entry.move else args
    notes.append(f"the move of {TENANT} to {to} failed {RESUMES + 1} times: "
                 f"{res.stdout.strip()[-300:]} {res.stderr.strip()[-300:]}")
    return RESUMES


def _rev_everywhere(store: RunStore, pods: list[str], rev: str, state: str) -> bool:
    return all((r := store.get(p, rev)) is not None and r.state == state for p in pods)


def zk_ensemble_kill9(base: Path, size: Size, cx: ClusterCtx) -> Observation:
    ens = Ensemble(base / "ensemble", 3, die_with_parent=True)
    ens.start()
    ens.wait_ready(90)
    root = f"/podjobs-ens-{uuid.uuid4().hex[:8]}"
    spec = ens.hosts + root
    topo = Topology(zookeeper=ens.hosts, pods=cx.topology.pods, db=cx.topology.db)
    pods = [p.name for p in topo.pods]
    zk = ZK(ens.hosts, root, timeout=4.0)
    zk.start(20)
    notes: list[str] = []
    client: PodClient | None = None
    enq: Enqueuer | None = None
    scheds = Schedulers(spec, base)
    try:
        register_topology(zk, topo)
        tenants = {f"shop-{i}": pods[i % len(pods)] for i in range(SPREAD)}
        TopologyStore(zk).assign_many({**tenants, TENANT: pods[0]})
        for p in topo.pods:
            e = create_engine(p.shard_url)
            with e.begin() as c:
                migration_probe.create_tables(c)
            e.dispose()
            for rev in HELD:
                control(p.shard_url, rev, pause=migration_probe.HOLD)
        with Harness(base, pod_urls=[p.redis_url for p in topo.pods], zk_spec=spec) as h:
            workers = {name: h.spawn(pod=name, concurrency=2) for name in pods}
            client = connect(ens.hosts, root)
            client.router.directory.wait_for(
                lambda d: all(d.tenant(t) for t in [*tenants, TENANT]), 20)
            enq = Enqueuer(client, h.ledger, [*tenants, TENANT], limit=LIMIT)
            enq.start()
            scheds.start("s1")
            store = RunStore(zk)
            wait_until(lambda: any((r := store.get(p, HELD[0])) is not None
                                   and r.state == "running" for p in pods), 60,
                       f"{HELD[0]} running on a shard")
            wait_until(lambda: len(h.finished()) >= 50, 30, "jobs flowing")

            def fault(member_of: str, rev: str, to: str) -> float:
                victim = ens.leader() if member_of == "leader" else ens.followers()[0]
                assert enq is not None
                enq.watch(time.monotonic())
                t = ens.kill9(victim)
                enq.mark = t
                log.warning("zk_ensemble: killed the %s %s", member_of, victim.name)
                for p in topo.pods:
                    control(p.shard_url, rev, pause=0.05)
                resumes = _move(spec, zk, to, base / "mover.log", notes)
                took = enq.acked_after(RECOVER_S)
                if took is None:
                    notes.append(f"no enqueue acknowledged within {RECOVER_S:.0f} s of the "
                                 f"{member_of}'s kill ({enq.first_error})")
                try:
                    wait_until(lambda: _rev_everywhere(store, pods, rev, "complete"), 90,
                               f"every shard at {rev} after the {member_of}'s kill")
                except AssertionError as exc:
                    notes.append(str(exc))
                log.warning("zk_ensemble: %s killed: first enqueue after it in %s s, the move "
                            "resumed %d times, %s done in %.1f s", member_of,
                            f"{took:.2f}" if took is not None else "-", resumes, rev,
                            time.monotonic() - t)
                ens.restart(victim)
                ens.wait_ready(60)
                return t

            fault("follower", HELD[0], pods[1])
            t_leader = fault("leader", HELD[1], pods[0])
            try:
                client.router.directory.wait_for(
                    lambda d: (e := d.tenant(TENANT)) is not None and e.pod == pods[0]
                    and not e.move, 20)
            except Exception as exc:
                notes.append(f"the client's directory did not see {TENANT} back on "
                             f"{pods[0]}: {exc}")
            started_after = {ev.pid for ev in ledger_mod.read(h.ledger_dir)
                             if ev.kind == "start" and ev.mono > t_leader}
            for name, w in workers.items():
                if w.poll() is not None:
                    notes.append(f"the worker of {name} exited ({w.returncode})")
                elif w.pid not in started_after:
                    notes.append(f"the worker of {name} started no job after the leader's kill")
            enq.stop.set()
            enq.join(10)
            acked = [ev.job_id for ev in ledger_mod.read(h.ledger_dir) if ev.kind == "enq"]
            h.wait_finished(acked, size.timeout * 2)
            log.warning("zk_ensemble: %d acknowledged, %d refused", enq.acked, enq.refused)
            return h.observe(allow_duplicates=False, notes=notes)
    finally:
        if enq is not None:
            enq.stop.set()
        scheds.stop_all()
        if client is not None:
            client.close()
        zk.stop()
        ens.stop()
