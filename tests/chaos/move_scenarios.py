"""Tenant moves under kill -9 of the mover (issue 11 item 8): one scenario per crash point
of pods/crashpoints.py and per way out, resume or rollback.

Each scenario, on the session's cluster (pods p1 and p2 of it):
1. the tenant `shop-m` lives on p1, with `stayer` beside it; a worker fleet runs the
   chaos ledger jobs on both pods (two workers on p1, one on p2, thread isolation);
2. before the move: `stayer` jobs fill p1's executor slots until the first mover is
   killed (`chaos.gate`), then the tenant's queued jobs (they wait in p1's queue, so the
   carry takes them) and scheduled jobs (due 2-6 s later, in p1's scheduled set); a
   thread keeps enqueuing the tenant's jobs through the router (three immediate, then one
   scheduled 0.5-2 s later) from before the move until after its recovery;
3. `podjobs tenants move shop-m --to p2 --jobs-only` runs as a subprocess that SIGKILLs
   itself at the crash point (`PODJOBS_MOVE_CRASH_AT`); for a rollback point the move is
   killed at `carry_written` first and then the `--rollback` is killed at the point;
4. a stall: p1's slots are freed, workers and enqueues go on, scheduled jobs come due,
   and a client with a stale directory writes the tenant's jobs straight onto both pods'
   queues (STALE on each: the worker that takes one must send it where the tenant is,
   held if it is moving, never run it on the wrong pod); then the recovery:
   - `resume`: `--resume` (after a killed rollback this finishes the rollback);
   - `rollback`: `--rollback` (before the flip; after it, the rollback must be refused,
     the entry untouched, and `--resume` finishes the move);
5. after it, STALE more jobs straight onto each pod's queue; the end: every acknowledged
   job finished, nothing held or staged on either pod.

The checker's ledger gives lost, finished twice (no worker is killed: none admissible),
stranded; `held` are jobs left in pj:held:/pj:helddue:/pj:carry: hashes of the tenant on
either pod; `misplaced` are the tenant's runs on a pod the directory did not place it on
at the time: on p1 after the move's fence went up (every p1 worker had acked: it never
starts one of the tenant's jobs again) and before a rollback was recorded, on p2 before
the flip, on p2 at all when the move was rolled back. The flip's time is the `flipped`
stamp of the move record, the rollback's its `updated` stamp, read by a directory
listener or after a kill; when the listener misses one (two changes in a row), that
window is checked from the fence on only for the pod that is allowed after it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text

from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.errors import PodjobsError
from podjobs.gateway import text as text_of
from podjobs.payload import encode
from podjobs.pods import crashpoints, fence
from podjobs.pods.directory import Change, Directory
from podjobs.pods.router import PodClient, connect
from podjobs.pods.topology import TopologyStore, register_topology
from tests.chaos import app
from tests.chaos import ledger as ledger_mod
from tests.chaos.checker import Observation
from tests.chaos.cluster_scenarios import ClusterCtx
from tests.chaos.harness import Harness
from tests.chaos.scenarios import Size
from tests.helpers import REPO, wait_until

TENANT = "shop-m"
STAYER = "stayer"
SRC, DST = "p1", "p2"
#: crash points of the move itself, in the order the mover reaches them
MOVE_POINTS = ("before_quiesce", "before_carry", "carry_written", "before_copy_data",
               "before_flip", "before_release", "released")
#: crash points of a rollback; the move is killed at ROLLBACK_AFTER first
ROLLBACK_POINTS = ("rollback_recorded", "rollback_written")
POINTS = MOVE_POINTS + ROLLBACK_POINTS
ROLLBACK_AFTER = "carry_written"
#: the move has flipped when the mover dies here: a rollback must be refused
FLIPPED = frozenset({"before_release", "released"})
THEN = ("resume", "rollback")
#: the one the quick subset (`make test`) runs: jobs staged on p1 and held on p2 at once
QUICK = ("carry_written", "rollback")

JOB_S = 0.01
STAYER_JOBS = 8  # fill p1's 8 executor slots (two workers x 4) until the gate opens
STALE = 20
PRE_QUEUED, PRE_SCHEDULED = 200, 60
DURING_MAX = 300
ENQUEUE_EVERY = 0.02
STALL_S = 1.0
MOVER_TIMEOUT = 60.0
END_TIMEOUT = 25.0


def _mover(cx: ClusterCtx, log: Path, *args: str,
           crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    """`podjobs tenants move shop-m ARGS` in a subprocess (killing itself at `crash_at`)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop(crashpoints.ENV, None)
    if crash_at:
        env[crashpoints.ENV] = crash_at
    cmd = [sys.executable, "-m", "podjobs.cli", "tenants", "move", TENANT, *args,
           "--zk", cx.zk_spec, "--timeout", "20"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=MOVER_TIMEOUT)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(args)} (crash at {crash_at}) -> {res.returncode}\n"
                f"{res.stdout}{res.stderr}\n")
    return res


def _killed(res: subprocess.CompletedProcess[str], point: str) -> None:
    """The fault happened (else the scenario tested nothing: an error, not a verdict)."""
    if res.returncode != -9:
        raise AssertionError(f"the mover was not killed at {point}: exit {res.returncode}: "
                             f"{res.stdout.strip()} {res.stderr.strip()}")


class Enqueuer(threading.Thread):
    """The tenant's jobs through the router, one at a time, until stopped: three
    immediate, then one scheduled 0.5-2 s later; each acknowledged id to the ledger."""

    def __init__(self, client: PodClient, ledger: ledger_mod.Ledger) -> None:
        super().__init__(name="move-enqueuer", daemon=True)
        self.client = client
        self.ledger = ledger
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.sent = 0

    def run(self) -> None:
        while not self.stop.is_set() and self.sent < DURING_MAX:
            delay = 0.5 + (self.sent % 7) * 0.25 if self.sent % 4 == 3 else None
            try:
                h = self.client.enqueue_call(app.work.call(JOB_S), tenant=TENANT, delay=delay)
            except PodjobsError as exc:  # not acknowledged: a refusal is a finding
                self.errors.append(f"{type(exc).__name__}: {exc}")
            else:
                self.ledger.record("enq", h.id)
            self.sent += 1
            self.stop.wait(ENQUEUE_EVERY)


class FlipWatch:
    """The move record's `flipped` stamp and the time its rollback was recorded (wall
    clock, `updated` of the first version at step rollback), if a directory change
    or a read shows them."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.flipped: float | None = None
        self.rolled_back: float | None = None
        directory.add_listener(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.kind == "tenant" and change.name == TENANT:
            entry = self.directory.tenant(TENANT)
            self.saw(entry.move if entry is not None else None)

    def saw(self, move: dict[str, Any] | None) -> None:
        move = move or {}
        stamp = move.get("flipped")
        if self.flipped is None and isinstance(stamp, int | float):
            self.flipped = float(stamp)
        stamp = move.get("updated")
        if move.get("step") == "rollback" and isinstance(stamp, int | float):
            self.rolled_back = min(float(stamp), self.rolled_back or math.inf)

    def close(self) -> None:
        self.directory.remove_listener(self._on_change)


def _fence_at(shard_url: str) -> float | None:
    """When the tenant's fence went up on the source shard (wall clock), if it did."""
    e = create_engine(shard_url)
    try:
        with e.connect() as c:
            row = c.execute(text(f"SELECT at FROM {fence.TABLE} WHERE tenant = :t"),
                            {"t": TENANT}).first()
    except Exception:
        return None  # no table: no fence
    finally:
        e.dispose()
    return float(row[0]) if row else None


def _leftovers(urls: dict[str, str]) -> tuple[frozenset[str], list[str]]:
    """Job ids of the tenant still held or staged on any pod, and markers left behind."""
    ids: set[str] = set()
    notes: list[str] = []
    for pod, url in urls.items():
        r = redis.Redis.from_url(url, socket_timeout=5)
        try:
            for k in (keys.held(TENANT), keys.held_due(TENANT), keys.carry(TENANT)):
                ids.update(text_of(f) for f in r.hkeys(k))
            if r.exists(keys.moving(TENANT)):
                notes.append(f"the move marker {keys.moving(TENANT)} is left on {pod}")
        finally:
            r.close()
    return frozenset(ids), notes


def _stale(h: Harness, urls: dict[str, str]) -> None:
    """STALE jobs of the tenant straight onto each pod's queue, as a client whose directory
    is out of date would write them; each acknowledged one to the ledger."""
    for url in urls.values():
        b = RedisBackend(url)
        try:
            now_ms = time.time_ns() // 1_000_000
            ps = [app.work.call(JOB_S).payload(now_ms, TENANT, None) for _ in range(STALE)]
            b.enqueue("default", [encode(p) for p in ps])
            for p in ps:
                h.ledger.record("enq", str(p["id"]))
        finally:
            b.close()


def run_move_kill9(base: Path, size: Size, cx: ClusterCtx, point: str,
                   then: str) -> Observation:
    assert point in POINTS and then in THEN, (point, then)
    pods = {p.name: p for p in cx.topology.pods}
    register_topology(cx.zk, cx.topology)
    store = TopologyStore(cx.zk)
    store.assign_many({TENANT: SRC, STAYER: SRC})
    urls = {SRC: pods[SRC].redis_url, DST: pods[DST].redis_url}
    log = base / "mover.log"
    notes: list[str] = []
    with Harness(base, pod_urls=list(urls.values()), zk_spec=cx.zk_spec) as h:
        pod_of_pid = {h.spawn(pod=pod, concurrency=4).pid: pod for pod in (SRC, SRC, DST)}
        client = connect(cx.topology.zookeeper, cx.zk_root)
        watch = FlipWatch(client.router.directory)
        enq = Enqueuer(client, h.ledger)
        try:
            client.router.directory.wait_for(lambda d: d.tenant(TENANT) is not None, 10)
            rs = {pod: redis.Redis.from_url(u, socket_timeout=5) for pod, u in urls.items()}
            wait_until(lambda: rs[SRC].scard(keys.WORKERS) == 2 and rs[DST].scard(keys.WORKERS) == 1,
                       15, "the workers of both pods to register")
            for r in rs.values():
                r.close()
            # p1's slots busy with the stayer's long jobs: the tenant's queued jobs wait
            gate = base / "gate"
            stayers = client.enqueue_many(app.gate, [([str(gate)], {})] * STAYER_JOBS,
                                          tenant=STAYER)
            pre = client.enqueue_many(app.work, [([JOB_S], {})] * PRE_QUEUED, tenant=TENANT)
            now = time.time()
            pre += [client.enqueue_call(app.work.call(JOB_S), tenant=TENANT,
                                        at=now + 2 + 4 * i / PRE_SCHEDULED)
                    for i in range(PRE_SCHEDULED)]
            for handle in stayers + pre:
                h.ledger.record("enq", handle.id)
            wait_until(lambda: ledger_mod.count(h.ledger_dir, "start") >= STAYER_JOBS, 10,
                       "the stayer's jobs to start on p1")
            enq.start()

            # the fault: the mover (or its rollback) killed at the point
            first = ROLLBACK_AFTER if point in ROLLBACK_POINTS else point
            _killed(_mover(cx, log, "--to", DST, "--jobs-only", crash_at=first), first)
            if point in ROLLBACK_POINTS:
                _killed(_mover(cx, log, "--rollback", crash_at=point), point)
            watch.saw(store.where(TENANT).move)
            gate.touch()  # p1's slots free: its workers take what reaches them
            _stale(h, urls)
            time.sleep(STALL_S)  # the fault's length: the mover stays dead while workers and
            #                      enqueues go on and jobs come due (kept: it is the stall itself)

            # the way out
            way = f"--{then}"
            res = _mover(cx, log, way)
            if then == "rollback" and point in FLIPPED:
                if res.returncode == 0 or "flipped already" not in res.stderr:
                    notes.append(f"a rollback after the flip was not refused: exit "
                                 f"{res.returncode}: {res.stderr.strip()[-300:]}")
                way = "--resume"
                res = _mover(cx, log, way)
            if res.returncode != 0:
                notes.append(f"{way} exited {res.returncode}: {res.stderr.strip()[-300:]}")
            _stale(h, urls)
            after = enq.sent  # a few enqueues after the move, on its final pod
            wait_until(lambda: enq.sent >= after + 3 or not enq.is_alive(), 10,
                       "3 enqueues after the move")
        finally:
            enq.stop.set()
            if enq.is_alive():
                enq.join(10)
            watch.close()
        notes += [f"{len(enq.errors)} enqueue(s) refused, e.g. {enq.errors[0]}"] if enq.errors else []

        acked = {e.job_id for e in ledger_mod.read(h.ledger_dir) if e.kind == "enq" and e.ok}
        with contextlib.suppress(AssertionError):
            wait_until(lambda: acked <= h.finished() and not _leftovers(urls)[0], END_TIMEOUT,
                       "every job to finish and nothing left held")
        client.close()

        moved = then == "resume" and point in MOVE_POINTS or point in FLIPPED
        want = DST if moved else SRC
        entry = store.where(TENANT)
        if entry.pod != want or entry.state != "active" or entry.move is not None:
            notes.append(f"the entry ends on {entry.pod} ({entry.state}, move {entry.move}), "
                         f"not active on {want}")
        held, markers = _leftovers(urls)
        notes += markers
        placement: list[tuple[float, str | None]] = [(-math.inf, SRC)]
        fenced = _fence_at(pods[SRC].shard_url)
        if not moved:  # on p1 but for fence..rollback, if both were seen; never on p2
            back = watch.rolled_back
            if fenced is not None and back is not None and back >= fenced:
                placement += [(fenced, None), (back, SRC)]
        else:
            if fenced is None:
                notes.append(f"no fence on {SRC}'s shard after the move")
            elif watch.flipped is not None and watch.flipped >= fenced:
                placement += [(fenced, None), (watch.flipped, DST)]
            else:
                placement.append((fenced, DST))
        mine = frozenset(acked - {s.id for s in stayers})
        runs = Counter(pod_of_pid.get(e.pid, "?") for e in ledger_mod.read(h.ledger_dir)
                       if e.kind == "start" and e.job_id in mine)
        (base / "facts.json").write_text(json.dumps(
            {"point": point, "then": then, "placement": placement, "flipped": watch.flipped,
             "rolled_back": watch.rolled_back, "fenced": fenced,
             "runs_by_pod": runs, "enqueued_during": enq.sent, "notes": notes}, default=str))
        obs = h.observe(allow_duplicates=False, held=held, pod_of_pid=pod_of_pid,
                        placement=placement, placed=mine, notes=notes)
    return obs


def scenario(point: str, then: str) -> Callable[[Path, Size, ClusterCtx], Observation]:
    def fn(base: Path, size: Size, cx: ClusterCtx) -> Observation:
        return run_move_kill9(base, size, cx, point, then)

    fn.__name__ = f"move_kill9_{point}_{then}"
    fn.__doc__ = f"kill -9 of the mover at {point}, then --{then}"
    return fn
