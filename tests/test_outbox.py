"""Transactional enqueue through the outbox (podjobs.transactional) on real servers: the
session's MariaDB shard and pod Redis, a private redis-server for the restart case."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

import podjobs
from podjobs.backend import RedisBackend
from podjobs.db import engine
from podjobs.errors import BackendUnavailable, ConfigurationError
from podjobs.testing import private_redis
from podjobs.transactional import TABLE, Relay


@podjobs.job(queue="obx")
def send_receipt(order_id: int) -> None:
    pass


@podjobs.job(queue="obx", unique_for=60)
def unique_job(n: int) -> None:
    pass


REPO = Path(__file__).resolve().parent.parent


def _order_order(backend: RedisBackend, queue: str = "obx") -> list[dict[str, Any]]:
    """The jobs in `queue` in the order a worker takes them (oldest first)."""
    return [json.loads(raw) for raw in reversed(backend.queued(queue))]


def _outbox_rows(url: str) -> int:
    with engine(url).connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {TABLE}")).scalar_one())


@pytest.fixture
def shard(pods: Any) -> tuple[str, RedisBackend]:
    pod = pods.pods[0]
    with engine(pod.shard_url).begin() as conn:
        conn.execute(text("CREATE TABLE orders (id INT PRIMARY KEY, total INT NOT NULL)"))
    backend = RedisBackend(pod.redis_url)
    return pod.shard_url, backend


def test_rollback_enqueues_nothing_commit_enqueues_once(shard: tuple[str, RedisBackend]) -> None:
    url, backend = shard
    with Session(engine(url)) as s:
        s.execute(text("INSERT INTO orders VALUES (1, 100)"))
        send_receipt.enqueue(1, tenant="acme", db=s)
        s.rollback()
    relay = Relay(url, backend)
    assert relay.once() == 0
    assert backend.queued("obx") == []

    with Session(engine(url)) as s:
        s.execute(text("INSERT INTO orders VALUES (2, 200)"))
        h = send_receipt.enqueue(2, tenant="acme", db=s)
        # written, not committed: the relay (another connection) sees nothing yet
        assert relay.once() == 0
        s.commit()
    assert relay.once() == 1
    jobs = _order_order(backend)
    assert [(j["id"], j["args"], j["tenant"]) for j in jobs] == [(h.id, [2], "acme")]
    assert _outbox_rows(url) == 0
    assert relay.once() == 0 and len(backend.queued("obx")) == 1


def test_outbox_block_and_podjobs_enqueue(shard: tuple[str, RedisBackend]) -> None:
    url, backend = shard
    with Session(engine(url)) as s, podjobs.outbox(s):
        send_receipt.enqueue(5, tenant="t1")
        podjobs.enqueue(send_receipt, 6, tenant="t1")
        s.commit()
    assert Relay(url, backend).once() == 2
    assert [j["args"] for j in _order_order(backend)] == [[5], [6]]


def test_refusals_name_the_job(shard: tuple[str, RedisBackend]) -> None:
    url, _ = shard
    with Session(engine(url)) as s:
        with pytest.raises(ConfigurationError, match="unique_job.*is unique"):
            unique_job.enqueue(1, db=s)
        with pytest.raises(podjobs.ArgumentsMismatch):
            send_receipt.enqueue(1, 2, db=s)


def test_one_tenants_jobs_leave_in_commit_order(shard: tuple[str, RedisBackend]) -> None:
    url, backend = shard
    want: dict[str, list[int]] = {"a": [], "b": []}
    n = 0
    for round_ in range(6):
        with Session(engine(url)) as s:
            for tenant in ("a", "b") if round_ % 2 else ("b", "a"):
                for _ in range(3):
                    n += 1
                    send_receipt.enqueue(n, tenant=tenant, db=s)
                    want[tenant].append(n)
            s.commit()
    relay = Relay(url, backend, batch=5)  # several batches
    while relay.once():
        pass
    got: dict[str, list[int]] = {"a": [], "b": []}
    for j in _order_order(backend):
        got[j["tenant"]].append(j["args"][0])
    assert got == want


def test_relay_killed_between_push_and_delete_enqueues_once(shard: tuple[str, RedisBackend],
                                                             tmp_path: Path) -> None:
    """A relay process SIGKILLed after its push, before deleting the rows: the next relay
    pushes the same rows again and Redis writes none of them twice."""
    url, backend = shard
    with Session(engine(url)) as s:
        handles = [send_receipt.enqueue(i, tenant="acme", db=s) for i in range(20)]
        s.commit()
    script = tmp_path / "relay.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal
        from podjobs.backend import RedisBackend
        from podjobs.transactional import Relay
        relay = Relay({url!r}, RedisBackend({backend.url!r}), batch=8)
        relay.after_push = lambda rows: os.kill(os.getpid(), signal.SIGKILL)
        relay.once()
        raise SystemExit("not killed")
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rc = subprocess.run([sys.executable, str(script)], env=env, timeout=120).returncode
    assert rc == -signal.SIGKILL
    assert len(backend.queued("obx")) == 8 and _outbox_rows(url) == 20   # pushed, not deleted
    relay = Relay(url, backend, batch=8)
    while relay.once():
        pass
    assert [j["id"] for j in _order_order(backend)] == [h.id for h in handles]
    assert _outbox_rows(url) == 0


def test_redis_restart_loses_nothing(pods: Any) -> None:
    """Redis down: the relay fails and keeps the rows; back up, they are pushed once."""
    url = pods.pods[0].shard_url
    with Session(engine(url)) as s:
        handles = [send_receipt.enqueue(i, db=s) for i in range(3)]
        s.commit()
    with private_redis() as server:
        backend = RedisBackend(server.address)
        relay = Relay(url, backend)
        server.stop(timeout=5)
        with pytest.raises(BackendUnavailable):
            relay.once()
        assert _outbox_rows(url) == 3
        server.start()
        server.wait_ready(60)
        assert relay.once() == 3
        assert relay.once() == 0
        assert [j["id"] for j in _order_order(backend)] == [h.id for h in handles]
        backend.close()


def test_one_relay_per_pod_leads_and_a_standby_takes_over(pods: Any, zk: Any) -> None:
    import threading

    from podjobs.pods.relay import PodRelay
    from podjobs.pods.topology import register_topology

    register_topology(zk, pods)
    pod = pods.pods[0]
    backend = RedisBackend(pod.redis_url)
    a, b = PodRelay(zk, pod.name), PodRelay(zk, pod.name)
    stop_a, stop_b = threading.Event(), threading.Event()
    ta = threading.Thread(target=a.run, args=(stop_a,), daemon=True)
    ta.start()
    assert a.leading.wait(30)
    tb = threading.Thread(target=b.run, args=(stop_b,), daemon=True)
    tb.start()
    try:
        with Session(engine(pod.shard_url)) as s:
            ids = [send_receipt.enqueue(i, tenant="acme", db=s).id for i in range(5)]
            s.commit()
        got = [backend.redis.brpop(["pj:q:obx"], timeout=30) for _ in ids]
        assert [json.loads(g[1])["id"] for g in got if g] == ids
        assert b.relay.moved == 0 and not b.leading.is_set()
        stop_a.set()
        ta.join(30)
        assert a.relay.moved == 5                    # (final once a stopped)
        assert b.leading.wait(30)                    # the standby took over
        with Session(engine(pod.shard_url)) as s:
            last = send_receipt.enqueue(99, tenant="acme", db=s).id
            s.commit()
        g = backend.redis.brpop(["pj:q:obx"], timeout=30)
        assert g is not None and json.loads(g[1])["id"] == last
    finally:
        stop_a.set()
        stop_b.set()
        ta.join(30)
        tb.join(30)


def test_relay_command_once(pods: Any, zk: Any, zk_root: str, capsys: Any) -> None:
    from podjobs.cli import main
    from podjobs.pods.topology import register_topology

    register_topology(zk, pods)
    pod = pods.pods[1]
    with Session(engine(pod.shard_url)) as s:
        for i in range(3):
            send_receipt.enqueue(i, db=s)
        s.commit()
    spec = f"{pods.zookeeper}{zk_root}"
    assert main(["relay", "--pod", pod.name, "--once", "--zk", spec, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["action"] == "relayed" and out["count"] == 3
    assert len(RedisBackend(pod.redis_url).queued("obx")) == 3
