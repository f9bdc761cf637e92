"""The queue's core behaviour on every backend (issue 19): the same tests on Redis, SQLite and
MariaDB (tests/backends.py), then what only the SQL backend has (its Alembic revisions,
enqueue in the caller's transaction, refusals) and a worker killed with SIGKILL on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import podjobs
from podjobs.errors import ConfigurationError, NotSupported
from podjobs.payload import encode
from podjobs.sqlbackend import SqlBackend, schema
from podjobs.sqlbackend.tables import VERSION_TABLE, metadata
from tests.backends import SQL_KINDS, Probe, make_probe, selected_kinds
from tests.helpers import REPO, stop_proc, wait_until

ran: list[Any] = []


def sql_probe(kind: str, request: pytest.FixtureRequest, cluster: Any, tmp_path: Path) -> Probe:
    pg_ = request.getfixturevalue("pg") if kind == "postgres" else None
    return make_probe(kind, cluster, tmp_path, pg_)


@pytest.fixture(params=selected_kinds())
def probe(request: pytest.FixtureRequest, cluster: Any, tmp_path: Path) -> Iterator[Probe]:
    p = sql_probe(request.param, request, cluster, tmp_path)
    client = podjobs.configure(client=podjobs.Client(p.backend()))
    ran.clear()
    yield p
    client.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/jobs.db"


@podjobs.job(name="b.add")
def add(ctx: podjobs.Context, a: int, b: int) -> int:
    ran.append(("add", a + b, ctx.attempt, ctx.queue))
    return a + b


@podjobs.job(name="b.tag", queue="default")
def tag_default(t: str) -> None:
    ran.append(t)


@podjobs.job(name="b.crit", queue="critical")
def tag_critical(t: str) -> None:
    ran.append(t)


@podjobs.job(name="b.low", queue="low")
def tag_low(t: str) -> None:
    ran.append(t)


@podjobs.job(name="b.flaky", retries=2, backoff=podjobs.constant(0.05))
def flaky(t: str, fails: int) -> None:
    ran.append(t)
    if ran.count(t) <= fails:
        raise ValueError(f"fail #{ran.count(t)}")


@podjobs.job(name="b.stamp")
def stamp(t: str) -> None:
    ran.append((t, time.time()))


@podjobs.job(name="b.unique", unique_for=60)
def uniq(x: int) -> None:
    ran.append(("uniq", x))


@podjobs.job(name="b.once", delivery="at_most_once", unique_for=60)
def once(x: int) -> None:
    ran.append(("once", x))


# -- the lease, on every backend ---------------------------------------------------------


# test_queue.py and test_reliability.py run the queue's behaviour on redis and sqlite (and
# mariadb, postgres with PODJOBS_TEST_BACKENDS=all: `make test-sql`); what follows is the
# SQL backend's own.


def test_a_worker_whose_lease_ran_out_is_reaped_and_its_jobs_run_elsewhere(probe: Probe) -> None:
    b = probe.backend()
    for i in range(3):
        tag_default.enqueue(f"j{i}")
    assert b.heartbeat("gone:1:x", 300, True, {"queues": "default"})
    got = b.reserve("gone:1:x", ["default"], 10, "req-1")
    assert got is not None and len(got) == 3
    # asked again with the same request id (a lost reply): the same jobs, nothing more
    again = b.reserve("gone:1:x", ["default"], 10, "req-1")
    assert again is not None and sorted(again) == sorted(got)
    assert probe.counts()["ready"] == 0
    wait_until(lambda: "gone:1:x" in dict(b.dead_worker_ids()), what="the lease to run out")
    with probe.worker():
        wait_until(lambda: len(ran) == 3, what="the reaped worker's jobs")
    assert sorted(ran) == ["j0", "j1", "j2"]
    assert b.reserve("gone:1:x", ["default"], 10) is None  # reaped: it gets nothing
    assert not b.heartbeat("gone:1:x", 300, False, {"queues": "default"})
    b.close()


# -- the SQL backend's own ---------------------------------------------------------------


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_alembic_revisions_make_exactly_the_declared_tables(kind: str, cluster: Any, tmp_path: Path,
                                                            request: pytest.FixtureRequest) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url = sql_probe(kind, request, cluster, tmp_path).url
    b = SqlBackend(url)
    SqlBackend(url).close()  # a second start finds the tables at the head: nothing to do
    with b.engine.connect() as c:
        assert schema.current(c) == schema.head()
        ctx = MigrationContext.configure(c, opts={"version_table": VERSION_TABLE})
        diff = [d for d in compare_metadata(ctx, metadata)
                if not (isinstance(d, tuple) and d[0] == "remove_table")]
        c.rollback()
    assert diff == []
    b.close()


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_enqueue_in_the_callers_transaction(kind: str, cluster: Any, tmp_path: Path,
                                            request: pytest.FixtureRequest) -> None:
    b = SqlBackend(sql_probe(kind, request, cluster, tmp_path).url)
    podjobs.configure(client=podjobs.Client(b))
    with b.engine.connect() as c:
        with c.begin() as t:
            assert add.call(1, 1).enqueue(connection=c).enqueued
            gone = add.call(1, 5).tracked().enqueue(connection=c)
            t.rollback()  # the caller's data failed: the job goes with it, and its record
        with c.begin():
            h = add.call(2, 2).enqueue(connection=c)
            assert b.enqueue_with(c, "default", [encode(add.call(3, 3).payload(0))]) == 1
            kept = add.call(3, 4).tracked().enqueue(connection=c)
    assert b.counts()["ready"] == 3
    assert b.status_record(gone.id) == {} and b.status_record(kept.id)["state"] == "queued"
    ran.clear()
    with Probe(kind, b.url).worker():
        wait_until(lambda: len(ran) == 3, what="the committed jobs")
        wait_until(lambda: kept.status().state == "succeeded", what="the tracked one's record")
    assert sorted(x[1] for x in ran) == [4, 6, 7] and h.enqueued
    b.close()


def test_enqueue_in_a_transaction_is_refused_on_redis(redis_url: str) -> None:
    podjobs.configure(redis_url)
    with pytest.raises(NotSupported, match=r"caller's transaction \(connection=\) needs the SQL"):
        add.call(1, 1).enqueue(connection=object())


def test_what_the_sql_backend_cannot_do_is_refused_by_name(sqlite_url: str) -> None:
    podjobs.configure(database_url=sqlite_url)
    with pytest.raises(NotSupported, match="tenant move"):
        SqlBackend(sqlite_url).hold("shop-1", "default", [("x", "{}")])
    assert SqlBackend(sqlite_url).counts()["ready"] == 0
    with pytest.raises(ConfigurationError, match="not both"):
        podjobs.configure("redis://127.0.0.1:1/0", database_url=sqlite_url)
    with pytest.raises(ConfigurationError, match="in-memory"):
        SqlBackend("sqlite://")
    with pytest.raises(ConfigurationError, match="not 'oracle'"):
        SqlBackend("oracle://u:secret@h/db")


def test_an_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(podjobs.BackendUnavailable, match=r"could not connect.*127\.0\.0\.1:1") as e:
        SqlBackend("mysql+pymysql://u:secret@127.0.0.1:1/db")
    assert "secret" not in str(e.value)


# -- a worker killed with SIGKILL on the SQL backend --------------------------------------


def _sql_worker(url: str, record_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PODJOBS_RECORD_URL=record_url, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "podjobs.cli", "worker", "--database-url", url,
           "--app", "tests.apps.core_app", "--queues", "default", "--concurrency", "4",
           "--heartbeat-ttl", "1", "--poll-interval", "0.05", "--log-level", "info"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT)


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_kill_9_mid_jobs_loses_none(kind: str, cluster: Any, tmp_path: Path,
                                    request: pytest.FixtureRequest) -> None:
    """A worker killed with SIGKILL while running jobs: its lease runs out, the next worker
    recovers the jobs; every job ends done (at least once), none lost."""
    from tests.apps.core_app import record

    url = sql_probe(kind, request, cluster, tmp_path).url
    rec_url = cluster.topology.pods[0].redis_url
    r = redis.Redis.from_url(rec_url)
    r.flushall()
    b = SqlBackend(url)
    tags = [f"k{i}" for i in range(40)]
    for t in tags:
        b.enqueue("default", [encode(record.call(t, 0.2).payload(0))])
    log = tmp_path / "workers.log"
    first = _sql_worker(url, rec_url, log)
    try:
        wait_until(lambda: r.llen("rec:started") >= 6, timeout=30, what="the first jobs to start")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        in_flight = b.counts()["reserved"]
        assert in_flight > 0, "the kill should leave jobs reserved"
        second = _sql_worker(url, rec_url, log)
        try:
            wait_until(lambda: set(x.decode() for x in r.lrange("rec:done", 0, -1)) >= set(tags),
                       timeout=60, what="every job done")
        finally:
            assert stop_proc(second) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    done = [x.decode() for x in r.lrange("rec:done", 0, -1)]
    lost = set(tags) - set(done)
    assert not lost
    assert b.counts() == {"ready": 0, "reserved": 0, "scheduled": 0, "retry": 0, "dead": 0,
                          "unique": 0}
    print(f"kill -9 on {kind}: {len(tags)} jobs, {in_flight} reserved at the kill, 0 lost, "
          f"{len(done) - len(set(done))} run twice")
    r.close()
    b.close()


# -- a pod on the SQL backend in the topology ------------------------------------------------


def test_a_pod_with_backend_sql_runs_its_tenants_jobs_without_redis(cluster: Any, zk: Any,
                                                                    pods: Any) -> None:
    """p2 is declared `backend: sql` (no Redis URL): its tenants' jobs go to tables on its
    shard and its pod worker runs them there; p1 stays on Redis; a move to p2 is refused."""
    from dataclasses import replace as dc_replace

    from sqlalchemy import create_engine, select

    from podjobs.infra.topofile import Pod, Topology
    from podjobs.pods.moves import Mover
    from podjobs.pods.podworker import PodWorker
    from podjobs.pods.router import connect
    from podjobs.pods.topology import TopologyStore, register_topology
    from tests.apps import pods_app
    from tests.helpers import fast_config

    p1, p2 = pods.pods[0], dc_replace(pods.pods[1], redis_url="", backend="sql")
    topo = Topology(pods.zookeeper, [p1, p2])
    assert Topology.from_dict(topo.to_dict()).pods[1] == p2
    assert Pod.from_json("p2", p2.to_json()) == p2
    with pytest.raises(ConfigurationError, match="backend 'mongo' is not one of redis, sql"):
        Pod("p9", "", "sqlite:////x", backend="mongo")
    register_topology(zk, topo)
    for p in (p1, p2):
        e = create_engine(p.shard_url)
        pods_app.metadata.create_all(e)
        e.dispose()
    store = TopologyStore(zk)
    assert store.pod("p2").backend == "sql"
    store.assign_many({"shop-r": "p1", "shop-s": "p2"})
    client = connect(cluster.topology.zookeeper, zk.root)
    podjobs.configure(client=client)
    try:
        client.router.directory.wait_for(lambda d: d.tenant("shop-s") is not None, 10)
        pods_app.write_row.enqueue_many([(n,) for n in range(20)], tenant="shop-r")
        pods_app.write_row.enqueue_many([(n,) for n in range(20)], tenant="shop-s")
        assert SqlBackend(p2.shard_url).counts()["ready"] == 20
        assert redis.Redis.from_url(pods.pods[1].redis_url).dbsize() == 0  # p2's Redis unused
        ws = [PodWorker(zk, name, fast_config()) for name in ("p1", "p2")]
        for w in ws:
            w.start()
        try:
            def rows(url: str) -> list[Any]:
                e = create_engine(url)
                with e.connect() as c:
                    got = list(c.execute(select(pods_app.rows.c.tenant, pods_app.rows.c.pod)))
                e.dispose()
                return got

            wait_until(lambda: len(rows(p1.shard_url)) == 20 and len(rows(p2.shard_url)) == 20,
                       timeout=30, what="both tenants' rows")
        finally:
            for w in ws:
                w.stop()
        assert set(map(tuple, rows(p2.shard_url))) == {("shop-s", "p2")}
        assert set(map(tuple, rows(p1.shard_url))) == {("shop-r", "p1")}
        with pytest.raises(NotSupported, match="pod p2 keeps its queue on the SQL backend"):
            Mover(zk, jobs_only=True).move("shop-r", "p2")
        assert store.where("shop-r").pod == "p1" and not store.where("shop-r").move
    finally:
        client.close()


class _Orig(Exception):
    def __init__(self, *args: Any, sqlstate: str | None = None) -> None:
        super().__init__(*args)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(("orig", "retried"), [
    (_Orig(1213, "Deadlock found"), True),                     # MariaDB/MySQL deadlock
    (_Orig(1205, "Lock wait timeout exceeded"), True),
    (_Orig(1062, "Duplicate entry"), False),
    (_Orig("deadlock detected", sqlstate="40P01"), True),     # PostgreSQL
    (_Orig("could not serialize", sqlstate="40001"), True),
    (_Orig("relation does not exist", sqlstate="42P01"), False),
    (_Orig("database is locked"), False),                     # SQLite: its busy timeout waits
])
def test_which_database_errors_are_conflicts_to_retry(orig: Exception, retried: bool) -> None:
    from sqlalchemy.exc import DBAPIError

    from podjobs.sqlbackend.backend import _conflict

    assert _conflict(DBAPIError("SELECT 1", {}, orig)) is retried
