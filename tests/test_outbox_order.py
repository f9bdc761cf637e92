"""`podjobs.outbox(session, ordered=True)` on the session's MariaDB shard: two transactions of
one tenant open at once leave the outbox in the order they commit. Without it the relay pushes
in row-id order, which two such transactions can commit against (shown first)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

import podjobs
from podjobs.backend import RedisBackend
from podjobs.db import engine
from podjobs.transactional import Relay
from tests.helpers import wait_until


@podjobs.job(queue="obo")
def step(name: str) -> None:
    pass


def _pushed(b: RedisBackend) -> list[str]:
    return [json.loads(raw)["args"][0] for raw in reversed(b.queued("obo"))]


def _lock_waits(url: str) -> int:
    with engine(url).connect() as conn:
        n = conn.execute(text("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                              "WHERE INFO LIKE 'INSERT INTO podjobs_outbox_lock%'")).scalar_one()
        conn.rollback()
    return int(n)


@pytest.fixture
def shard(pods: Any) -> tuple[str, RedisBackend]:
    pod = pods.pods[0]
    return pod.shard_url, RedisBackend(pod.redis_url)


def test_unordered_two_open_transactions_leave_in_row_order(shard: Any) -> None:
    url, b = shard
    with Session(engine(url)) as first, Session(engine(url)) as second:
        step.enqueue("first", tenant="acme", db=first)      # the smaller row id
        step.enqueue("second", tenant="acme", db=second)
        second.commit()                                     # ...but commits first
        first.commit()
    Relay(url, b).once()
    assert _pushed(b) == ["first", "second"]                # not the commit order


def test_ordered_transactions_of_a_tenant_leave_in_commit_order(shard: Any) -> None:
    url, b = shard
    done = threading.Event()
    errors: list[BaseException] = []

    def second_tx() -> None:
        try:
            with Session(engine(url)) as s, podjobs.outbox(s, ordered=True):
                step.enqueue("second", tenant="acme")       # waits for the first to end
                s.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            done.set()

    with Session(engine(url)) as first, podjobs.outbox(first, ordered=True):
        step.enqueue("first", tenant="acme")
        t = threading.Thread(target=second_tx)
        t.start()
        wait_until(lambda: _lock_waits(url) >= 1 or done.is_set(), 20, "the second transaction to wait")
        assert not done.is_set()
        step.enqueue("other", tenant="zeta")                # another tenant: not waited on
        first.commit()
    t.join(30)
    assert done.is_set() and not errors, errors
    Relay(url, b).once()
    assert _pushed(b) == ["first", "other", "second"]
