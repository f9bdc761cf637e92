"""A shard that stops answering under the scheduler (issue 17 item 3).

`shard_blackholed`: one scheduler (in this process) runs the periodic duty (a per-second,
per-pod job: tests/apps/periodic_app.py) and the migrations duty (the five test revisions)
over the session's three pods, p3's shard reached through tests/chaos/proxy.py. Once the
leader has read every shard, the proxy blackholes p3's shard (connections stay open, nothing
comes back: what a dead host behind a firewall looks like). Then:

- the periodic job still ticks every second on every pod: at least TICKS of its own ticks per
  pod (not folded into a later one as `missed`) within TICKS + SLACK_S seconds, where
  a leader stuck on the shard ran 3 in 30 s before issue 17;
- p3's shard is published with a read error (the reads time out, they do not hang);
- the rollout completes on p1 and p2.

The ledger: every tick run and every (pod, revision) of p1 and p2 is a job; a tick run
twice or a revision applied twice is a duplicate, one not applied is lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis
from sqlalchemy import create_engine

from podjobs import cron
from podjobs.infra.topofile import Pod, Topology
from podjobs.pods.directory import Directory
from podjobs.pods.podworker import PodWorker
from podjobs.pods.router import Router
from podjobs.pods.topology import register_topology
from podjobs.scheduler import paths
from podjobs.scheduler.migrate import close_zk_clients
from podjobs.scheduler.migrations import MigrationsConfig, MigrationsDuty
from podjobs.scheduler.periodic import PeriodicDuty
from podjobs.scheduler.process import Scheduler
from podjobs.scheduler.runs import RunStore
from tests.apps import migration_probe, periodic_app
from tests.chaos.checker import Observation
from tests.chaos.cluster_scenarios import ClusterCtx, _probe_events
from tests.chaos.ledger import Event
from tests.chaos.proxy import Proxy
from tests.chaos.scenarios import Size
from tests.helpers import fast_config, wait_until
from tests.test_scheduler import MIGRATIONS, ORDER

log = logging.getLogger(__name__)

#: own ticks each pod must run while the shard is blackholed
TICKS = 8
SLACK_S = 12.0


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = parts.netloc.rsplit("@", 1)
    where = f"{host}:{port}"
    return parts._replace(netloc=f"{netloc[0]}@{where}" if len(netloc) == 2 else where).geturl()


def shard_blackholed(base: Path, size: Size, cx: ClusterCtx) -> Observation:
    dead = cx.topology.pods[-1]
    port = urlsplit(dead.shard_url).port
    assert port is not None, f"{dead.shard_url}: a network shard (MariaDB) is needed"
    proxy = Proxy(port)
    pods = [*cx.topology.pods[:-1], Pod(dead.name, dead.redis_url, _through(dead.shard_url,
                                                                             proxy.port))]
    topo = Topology(zookeeper=cx.topology.zookeeper, pods=pods, db=cx.topology.db)
    register_topology(cx.zk, topo)
    healthy = {p.name: p.shard_url for p in pods[:-1]}
    for url in [*healthy.values(), dead.shard_url]:
        e = create_engine(url)
        with e.begin() as c:
            migration_probe.create_tables(c)
        e.dispose()
    rs = {p.name: redis.Redis.from_url(p.redis_url) for p in pods}
    directory = Directory(cx.zk)
    directory.start()
    router = Router(directory)
    spec = cron.registered()["periodic.every_second"]
    periodic = PeriodicDuty(cx.zk, router, [spec])
    migrations = MigrationsDuty(cx.zk, MigrationsConfig(
        directory=MIGRATIONS, zk_spec=cx.zk_spec, zk_timeout=2.0, resync_after=1.0))
    sched = Scheduler(cx.zk, [periodic, migrations], interval=0.05, identity={"id": "s-dead"})
    stop = threading.Event()
    th = threading.Thread(target=sched.run, args=(stop,), daemon=True)
    workers = [PodWorker(cx.zk, p.name, fast_config(concurrency=2)) for p in pods]
    for w in workers:
        w.start()
    notes: list[str] = []
    store = RunStore(cx.zk)
    try:
        th.start()
        wait_until(lambda: cx.zk.get_json(paths.shard(cx.zk, dead.name)) is not None, 30,
                   "the leader read p3's shard")
        proxy.blackhole(True)
        t0 = time.time()
        from_tick = int(t0) + 1

        def own_ticks(name: str) -> int:
            rows = [json.loads(x) for x in rs[name].lrange(periodic_app.REC, 0, -1)]
            return sum(1 for r in rows if r["tick"] >= from_tick and not r["missed"])

        for cond, limit, what in (
                (lambda: all(own_ticks(n) >= TICKS for n in rs), TICKS + SLACK_S,
                 f"{TICKS} own per-second ticks on every pod with p3's shard blackholed"),
                (lambda: ((cx.zk.get_json(paths.shard(cx.zk, dead.name)) or ({}, 0))[0]
                          .get("error")), 30, "p3's shard published with a read error"),
                (lambda: all((r := store.get(p, ORDER[-1])) is not None
                             and r.state == "complete" for p in healthy), 90,
                 "p1 and p2 at head while p3's shard is blackholed")):
            try:
                wait_until(cond, limit, what)
            except AssertionError as exc:
                notes.append(str(exc))
        log.warning("shard_blackholed: %d own ticks per pod (fewest) in %.1f s with p3's shard "
                    "blackholed", min(own_ticks(n) for n in rs), time.time() - t0)
    finally:
        stop.set()
        th.join(30)
        for w in workers:
            w.stop()
        proxy.close()
        migrations.close()
        router.close()
        directory.stop()
        close_zk_clients()
    events: list[Event] = list(_probe_events(healthy))
    seen: set[str] = set()
    for name, r in rs.items():
        for x in r.lrange(periodic_app.REC, 0, -1):
            row = json.loads(x)
            tid = f"tick/{name}/{row['tick']}"
            if tid not in seen:
                events.append(Event("enq", tid))
                seen.add(tid)
            t = float(len(events))
            events.append(Event("start", tid, mono=t, wall=t))
            events.append(Event("finish", tid, mono=t + 0.5, wall=t + 0.5))
        r.close()
    return Observation(events=events, notes=notes)
