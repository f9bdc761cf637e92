"""A tenant move carries the tenant's unsent outbox rows (issue 18), on real ZooKeeper, pod
Redis servers and MariaDB shards: the rows leave the source shard, their jobs are held on
the destination and released there in order with the tenant's other jobs, each once; a
relay of the source that read a row before the move writes nothing when it pushes it; a
mover killed with kill -9 mid-way and resumed enqueues nothing twice."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

import podjobs
from podjobs.backend import RedisBackend
from podjobs.db import engine
from podjobs.infra.topofile import Topology
from podjobs.pods.moves import Mover
from podjobs.pods.topology import TopologyStore, register_topology
from podjobs.pods.zk import ZK
from podjobs.transactional import TABLE, Relay
from tests.test_moves_faults import killed, mover_cli, ok


@podjobs.job(queue="obm")
def receipt(n: int) -> None:
    pass


def _commit(url: str, tenant: str, *ns: int) -> list[str]:
    """One transaction enqueueing receipt(n) for each n through the outbox."""
    with Session(engine(url)) as s:
        ids = [receipt.enqueue(n, tenant=tenant, db=s).id for n in ns]
        s.commit()
    return ids


def _unsent(url: str, tenant: str) -> list[str]:
    with engine(url).connect() as conn:
        return [str(r[0]) for r in conn.execute(
            text(f"SELECT job_id FROM {TABLE} WHERE tenant = :t ORDER BY id"), {"t": tenant})]


def _queue(b: RedisBackend) -> list[tuple[str, str, int]]:
    """(tenant, id, n) of the jobs on queue obm, in the order a worker takes them."""
    return [(j["tenant"], j["id"], j["args"][0])
            for j in (json.loads(raw) for raw in reversed(b.queued("obm")))]


@pytest.fixture
def setup(zk: ZK, pods: Topology) -> tuple[TopologyStore, RedisBackend, RedisBackend, str]:
    register_topology(zk, pods)
    store = TopologyStore(zk)
    store.assign_many({"acme": "p1", "other": "p1"})
    p1, p2 = pods.pod("p1"), pods.pod("p2")
    return store, RedisBackend(p1.redis_url), RedisBackend(p2.redis_url), p1.shard_url


def test_a_move_carries_unsent_outbox_rows_once_in_order(zk: ZK, setup: Any) -> None:
    store, b1, b2, url = setup
    first = _commit(url, "acme", 1)
    Relay(url, b1).once()                              # pushed to p1 before the move
    rest = _commit(url, "acme", 2, 3) + _commit(url, "acme", 4)
    others = _commit(url, "other", 100)
    # a relay of p1 that read acme's rows before the move and pushes them after it
    stale = Relay(url, b1)
    with engine(url).connect() as conn:
        read = stale._read(conn)
    assert [r.job_id for r in read] == rest + others

    entry = Mover(zk, jobs_only=True).move("acme", "p2")
    assert entry.pod == "p2" and entry.move is None
    assert _unsent(url, "acme") == []                   # taken off p1's shard
    assert _unsent(url, "other") == others              # another tenant's rows stay
    assert _queue(b1) == []                             # nothing of acme left on p1
    assert _queue(b2) == [("acme", jid, n) for jid, n in zip(first + rest, [1, 2, 3, 4],
                                                                 strict=True)]
    # the stale relay pushes what it read: only the other tenant's job is written
    assert b1.outbox_push("obm", [(r.job_id, r.due_ms, r.payload) for r in read]) == 1
    assert _queue(b1) == [("other", others[0], 100)]
    assert len(_queue(b2)) == 4


def test_a_job_the_relay_pushed_first_is_not_held_twice(zk: ZK, setup: Any) -> None:
    """The relay pushed a row (its marker set) but was killed before deleting it: the move
    finds the row, leaves the job to the carry of p1's queue, and deletes the row."""
    store, b1, b2, url = setup
    ids = _commit(url, "acme", 1, 2)
    relay = Relay(url, b1)
    relay.after_push = lambda rows: (_ for _ in ()).throw(RuntimeError("killed"))
    with pytest.raises(RuntimeError, match="killed"):
        relay.once()                                    # pushed, rows not deleted
    assert _unsent(url, "acme") == ids
    Mover(zk, jobs_only=True).move("acme", "p2")
    assert _unsent(url, "acme") == []
    assert [jid for _, jid, _ in _queue(b2)] == ids     # each once
    assert _queue(b1) == []


@pytest.mark.parametrize("crash_at", ["outbox_held", "before_release"])
def test_a_mover_killed_then_resumed_enqueues_each_outbox_job_once(
        cluster: Any, zk_root: str, setup: Any, crash_at: str) -> None:
    """kill -9 of `podjobs tenants move` with a batch held on p2 and its rows still on p1
    (outbox_held), or after the flip before the release (before_release: rows committed
    on p1 meanwhile are carried by the release step); then --resume."""
    store, b1, b2, url = setup
    ids = _commit(url, "acme", *range(0, 300)) + _commit(url, "acme", *range(300, 700))
    killed(mover_cli(cluster, zk_root, "acme", "--to", "p2", "--jobs-only", crash_at=crash_at))
    late = _commit(url, "acme", 700, 701)              # committed on p1 during the move
    ok(mover_cli(cluster, zk_root, "acme", "--resume"))
    assert _unsent(url, "acme") == []
    got = _queue(b2)
    assert [jid for _, jid, _ in got] == sorted(ids + late)   # once each, oldest first
    assert _queue(b1) == []
    assert store.where("acme").pod == "p2"


def _once(url: str, tenant: str, key: str) -> bool:
    """ctx.once(key) for a job of `tenant` on the shard at `url`, committed."""
    from podjobs import effects
    from podjobs.ids import new_id

    with Session(engine(url)) as s:
        got = effects.once(SimpleNamespace(db=s, job_id=new_id(), tenant=tenant), key)  # type: ignore[arg-type]
        s.commit()
    return got


def test_a_move_copies_the_tenants_once_keys(zk: ZK, pods: Topology, setup: Any) -> None:
    """A job whose effect committed on p1 but which is run again on p2 after the move (its
    worker died before the ack) finds its ctx.once key there: no second effect."""
    url2 = pods.pod("p2").shard_url
    _, _, _, url = setup
    assert _once(url, "acme", "charge:1") and _once(url, "acme", "charge:2")
    assert _once(url, "other", "charge:3")
    Mover(zk, jobs_only=True).move("acme", "p2")
    assert not _once(url2, "acme", "charge:1") and not _once(url2, "acme", "charge:2")
    assert _once(url2, "other", "charge:3")              # another tenant's keys stay behind


def test_a_ledger_table_made_before_the_tenant_column_is_upgraded(pods: Topology) -> None:
    from podjobs import effects

    url, url2 = pods.pod("p1").shard_url, pods.pod("p2").shard_url
    with engine(url).begin() as conn:                  # the table as issue 18 first made it
        conn.execute(text(f"CREATE TABLE {effects.TABLE} (okey VARCHAR(255) NOT NULL PRIMARY "
                          "KEY, job_id CHAR(26) NOT NULL, created_ms BIGINT NOT NULL, "
                          "expires_ms BIGINT NOT NULL)"))
        conn.execute(text(f"INSERT INTO {effects.TABLE} VALUES ('old', :j, 1, 99999999999999)"),
                     {"j": "0" * 26})
    effects._ensured.clear()
    assert effects.copy_keys(url, url2, "acme") == 0    # column added; old keys have no tenant
    assert _once(url, "acme", "charge:9")
    assert effects.copy_keys(url, url2, "acme") == 1
    assert not _once(url2, "acme", "charge:9")


def test_a_move_killed_with_outbox_jobs_held_rolls_back_once(cluster: Any, zk_root: str,
                                                             setup: Any) -> None:
    """kill -9 with a batch held on p2 and its rows still on p1, then --rollback: the held
    jobs come back to p1's queue, and p1's relay, pushing the rows left (that batch and the
    ones the move never reached), writes each job once."""
    store, b1, b2, url = setup
    ids = _commit(url, "acme", *range(0, 700))
    killed(mover_cli(cluster, zk_root, "acme", "--to", "p2", "--jobs-only",
                     crash_at="outbox_held"))
    assert len(_unsent(url, "acme")) == 700             # the first batch held, not deleted
    ok(mover_cli(cluster, zk_root, "acme", "--rollback"))
    Relay(url, b1).once()
    Relay(url, b1).once()
    assert _unsent(url, "acme") == []
    assert sorted(jid for _, jid, _ in _queue(b1)) == sorted(ids)
    assert _queue(b2) == []
    assert store.where("acme").pod == "p1"
