"""Tenant quotas on real servers: the token bucket and the pending cap checked inside the
enqueue script (nothing written when over), the exact pending count through reserve,
recovery, cancel and re-sends, the directory's defaults and overrides, `tenants quota|top`
and the API's 429."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import podjobs
from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.cli import main
from podjobs.fairshare import ready_count, ready_jobs
from podjobs.ids import new_id
from podjobs.infra.topofile import Topology
from podjobs.pods.router import PodClient, connect
from podjobs.pods.topology import TopologyStore, register_topology
from podjobs.pods.zk import ZK
from podjobs.quota import Quota, QuotaExceeded, TenantQuota
from podjobs.status import StatusWrite
from tests.apps import pods_app
from tests.helpers import wait_until


def payload(tenant: str = "shop", jid: str | None = None) -> str:
    return json.dumps({"id": jid or new_id(), "job": "t.noop", "queue": "q", "args": [],
                       "enqueued_at": 0, "tenant": tenant}, separators=(",", ":"))


@pytest.fixture
def backend(redis_url: str) -> Iterator[RedisBackend]:
    b = RedisBackend(redis_url)
    yield b
    b.close()


def snapshot(r: redis.Redis) -> dict[bytes, Any]:
    """Every key with its type and size: what 'nothing written' compares."""
    out: dict[bytes, Any] = {}
    for k in r.keys("*"):
        t = r.type(k)
        out[k] = (t, r.dump(k) if t != b"hash" else sorted(r.hgetall(k).items()))
    return out


def test_the_rate_bucket_refuses_over_its_burst_and_writes_nothing(backend: RedisBackend) -> None:
    r = backend.redis
    tq = TenantQuota("shop", Quota(rate=2, burst=3))
    for _ in range(3):
        assert backend.enqueue("q", [payload()], quota=tq) == 1
    before = snapshot(r)
    with pytest.raises(QuotaExceeded) as e:
        backend.enqueue("q", [payload()], quota=tq)
    assert e.value.limit == "rate" and e.value.tenant == "shop"
    assert 0 < (e.value.retry_after_s or 0) <= 0.5  # one token at 2/s, less what refilled
    assert "'shop'" in str(e.value) and "2 jobs/s" in str(e.value)
    assert snapshot(r) == before, "a refused enqueue wrote something"
    assert ready_count(r, "q") == 3
    with pytest.raises(QuotaExceeded) as e:  # more than the bucket ever holds: never
        backend.enqueue("q", [payload() for _ in range(4)], quota=tq)
    assert e.value.limit == "burst" and e.value.retry_after_s is None
    # refilled at the rate: accepted again once a token is back (an event, polled)
    wait_until(lambda: _accepted(backend, tq), timeout=10, what="a refilled token")
    assert ready_count(r, "q") == 4


def _accepted(backend: RedisBackend, tq: TenantQuota) -> bool:
    try:
        return backend.enqueue("q", [payload()], quota=tq) == 1
    except QuotaExceeded:
        return False


def test_a_resend_of_an_accepted_enqueue_is_not_charged_twice(backend: RedisBackend) -> None:
    r = backend.redis
    tq = TenantQuota("shop", Quota(rate=0.001, burst=2, pending=2))
    text = payload()
    assert backend.enqueue("q", [text], quota=tq) == 1
    assert backend.enqueue("q", [text], quota=tq) == 1  # a re-send (lost reply): its answer
    assert ready_count(r, "q") == 1
    assert r.hget(keys.PENDING_COUNT, "shop") == b"1"
    assert float(r.hget(keys.rate("shop"), "t") or -1) == pytest.approx(1, abs=0.01)
    assert backend.enqueue("q", [payload()], quota=tq) == 1  # the second token is still there


def test_the_pending_count_is_exact_through_reserve_recover_and_resends(backend: RedisBackend) -> None:
    r = backend.redis
    tq = TenantQuota("shop", Quota(pending=3))
    other = TenantQuota("calm", Quota(pending=1))
    ids = [new_id() for _ in range(3)]
    assert backend.enqueue("q", [payload(jid=ids[0]), payload(jid=ids[1])], quota=tq) == 2
    assert backend.enqueue("q", [payload(jid=ids[2])], delay_ms=60_000, quota=tq) == 1  # due later
    assert backend.enqueue("q", [payload("calm")], quota=other) == 1
    before = snapshot(r)
    with pytest.raises(QuotaExceeded) as e:
        backend.enqueue("q", [payload()], quota=tq)
    assert (e.value.limit, e.value.current, e.value.value) == ("pending", 3, 3)
    assert "3 pending jobs, at its cap of 3" in str(e.value)
    assert snapshot(r) == before
    assert backend.heartbeat("w1", 60_000, True, {"queues": "q"})
    got = backend.reserve("w1", ["q"], 10)
    assert got is not None and len(got) == 3  # shop's two ready jobs and calm's
    assert r.hget(keys.PENDING_COUNT, "shop") == b"1" and r.hget(keys.PENDING_COUNT, "calm") is None
    # the worker dies (kill -9): its jobs go back to the queue and start again; they were
    # counted out once and are not counted again
    assert backend.recover("w1", ["q"], force=True) == 3
    assert r.hget(keys.PENDING_COUNT, "shop") == b"1"
    assert backend.heartbeat("w2", 60_000, True, {"queues": "q"})
    assert len(backend.reserve("w2", ["q"], 10) or []) == 3
    assert r.hget(keys.PENDING_COUNT, "shop") == b"1"
    assert r.hkeys(keys.PENDING) == [ids[2].encode()]  # only the one due later is pending
    assert backend.enqueue("q", [payload(), payload()], quota=tq) == 2
    assert r.hget(keys.PENDING_COUNT, "shop") == b"3"


def test_cancelling_a_tracked_job_frees_its_place(backend: RedisBackend) -> None:
    r = backend.redis
    tq = TenantQuota("shop", Quota(pending=1))
    jid = new_id()
    text = payload(jid=jid)
    st = StatusWrite(keys.status(jid), json.dumps({"state": "queued", "queue": "q",
                                                   "tenant": "shop", "job": "t.noop"}), 600)
    assert backend.enqueue("q", [text], status=st, quota=tq) == 1
    with pytest.raises(QuotaExceeded):
        backend.enqueue("q", [payload()], quota=tq)
    assert backend.cancel(jid, "q", "shop", None, 60)[0] == "cancelled"
    assert r.hget(keys.PENDING_COUNT, "shop") is None and r.hlen(keys.PENDING) == 0
    assert backend.enqueue("q", [payload()], quota=tq) == 1


def test_deleting_a_scheduled_job_or_carrying_it_off_in_a_move_frees_its_place(
        backend: RedisBackend) -> None:
    from podjobs.ops import Inspector

    r = backend.redis
    tq = TenantQuota("shop", Quota(pending=2))
    later, ready = new_id(), new_id()
    assert backend.enqueue("q", [payload(jid=later)], delay_ms=600_000, quota=tq) == 1
    assert backend.enqueue("q", [payload(jid=ready)], quota=tq) == 1
    assert r.hget(keys.PENDING_COUNT, "shop") == b"2"
    assert Inspector(backend).delete_waiting("scheduled", later)
    assert r.hget(keys.PENDING_COUNT, "shop") == b"1"
    stored = ready_jobs(r, "q")[0].decode()
    assert backend.carry("shop", keys.queue("q"), "queue", "q", [(ready, stored, 0.0)]) == 1
    assert r.hget(keys.PENDING_COUNT, "shop") is None and r.hlen(keys.PENDING) == 0


def test_a_tenant_without_a_quota_leaves_no_quota_state(backend: RedisBackend) -> None:
    r = backend.redis
    assert backend.enqueue("q", [payload() for _ in range(5)]) == 5
    assert backend.heartbeat("w1", 60_000, True, {"queues": "q"})
    assert len(backend.reserve("w1", ["q"], 10) or []) == 5
    assert not r.keys("pj:rate:*") and not r.exists(keys.PENDING, keys.PENDING_COUNT)


# -- the directory, the enqueuer, the CLI ------------------------------------------------


@pytest.fixture
def store(zk: ZK, pods: Topology) -> TopologyStore:
    register_topology(zk, pods)
    return TopologyStore(zk)


@pytest.fixture
def client(cluster: Any, zk_root: str, store: TopologyStore) -> Iterator[PodClient]:
    c = connect(cluster.topology.zookeeper, zk_root)
    podjobs.configure(client=c)
    yield c
    podjobs.configure(client=podjobs.Client(c.router.backend("p1")))


def test_the_pods_default_and_the_tenants_override_reach_the_enqueuer(
        store: TopologyStore, client: PodClient, pods: Topology, cluster: Any, zk_root: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    store.assign("small", "p1")
    store.assign("big", "p1")
    store.assign("free", "p2")
    zk = ["--zk", cluster.topology.zookeeper + zk_root]
    assert main(["tenants", "quota", "--pod", "p1", "--pending", "1", *zk]) == 0
    assert "pod p1's default tenant quota is now {\"pending\": 1}" in capsys.readouterr().out
    assert main(["tenants", "quota", "big", "--pending", "3", "--rate", "0.01", "--burst", "10",
                 "--json", *zk]) == 0
    out = capsys.readouterr().out
    own = {"pending": 3, "rate": 0.01, "burst": 10}
    assert json.loads(out) == {"tenant": "big", "pod": None, "quota": own, "effective": own}
    assert main(["tenants", "quota", "big", "--pending", "lots", *zk]) == 2
    assert "--pending 'lots' is not a whole number" in capsys.readouterr().err
    d = client.router.directory
    assert d.wait_for(lambda d: d.pod("p1").quota is not None
                      and (e := d.tenant("big")) is not None and e.quota is not None, 10)
    pods_app.write_row.enqueue(1, tenant="small")
    with pytest.raises(QuotaExceeded, match="'small' has 1 pending jobs, at its cap of 1"):
        pods_app.write_row.enqueue(2, tenant="small")
    for i in range(3):
        pods_app.write_row.enqueue(i, tenant="big")
    with pytest.raises(QuotaExceeded, match="'big' has 3 pending"):
        pods_app.write_row.enqueue(9, tenant="big")
    for i in range(5):  # p2 has no default: free is not limited
        pods_app.write_row.enqueue(i, tenant="free")
    p1 = redis.Redis.from_url(pods.pod("p1").redis_url)
    assert ready_count(p1, "default") == 4
    assert main(["tenants", "top", "--json", *zk]) == 0
    top = json.loads(capsys.readouterr().out)
    assert [(u["tenant"], u["pod"], u["pending"], u["pending_cap"]) for u in top] == [
        ("big", "p1", 3, 3), ("small", "p1", 1, 1)]
    assert top[0]["rate"] == 0.01 and 7 <= top[0]["tokens"] < 7.1 and top[0]["nearness"] == 1.0
    assert top[0]["rate_used"] == pytest.approx(0.3, abs=0.01)
    assert main(["tenants", "top", "--limit", "1", *zk]) == 0
    text = capsys.readouterr().out
    assert "big" in text and "small" not in text and "100%" in text
    # clearing the override leaves the pod's default
    assert main(["tenants", "quota", "big", "--clear", *zk]) == 0
    assert "(in effect: {\"pending\": 1})" in capsys.readouterr().out
    assert d.wait_for(lambda d: (e := d.tenant("big")) is not None and e.quota is None, 10)
    with pytest.raises(QuotaExceeded, match="'big' has 3 pending jobs, at its cap of 1"):
        pods_app.write_row.enqueue(9, tenant="big")
