"""The HTTP API in process (starlette's TestClient) on pod p1's real Redis, with faults: a pod
that stops answering after an enqueue, or while an enqueue is on the wire. Once a job may have
been enqueued, no answer may tell the caller that nothing was (it would enqueue it again)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.errors import BackendUnavailable
from podjobs.fairshare import ready_count
from podjobs.surface.api.app import create_app
from podjobs.surface.api.auth import Principal, TokenStore, digest
from podjobs.surface.api.service import ApiError, Service
from tests.apps import api_app  # noqa: F401 - the jobs the API enqueues
from tests.helpers import wait_until
from tests.test_api_tracking import OnePodRouter

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

#: a script that keeps Redis busy for ARGV[1] microseconds
BUSY = ("local s = redis.call('TIME'); local t0 = s[1] * 1000000 + s[2]; while true do "
        "local t = redis.call('TIME'); if t[1] * 1000000 + t[2] - t0 > tonumber(ARGV[1]) then "
        "return 1 end end")
TOKEN = "token-for-shop-f-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class UnreadableAfterEnqueue(Service):
    """Enqueues normally; every read of a job afterwards fails (its pod went away)."""

    state = ""

    def read_state(self, pod: str, job_id: str) -> str:
        if self.state:
            return self.state
        raise BackendUnavailable("cannot read a job's status: Redis at p1 is unreachable")

    def find(self, principal: Principal, job_id: str) -> Any:
        raise ApiError(503, "pod(s) p1 cannot be read now; the job may live there")


def client_for(service: Service) -> TestClient:
    tokens = TokenStore(entries={digest(TOKEN): Principal("f", tenant="shop-f")})
    return TestClient(create_app(service, tokens), raise_server_exceptions=False)


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def unreadable(redis_url: str) -> Iterator[tuple[TestClient, UnreadableAfterEnqueue]]:
    svc = UnreadableAfterEnqueue(OnePodRouter(redis_url))
    with client_for(svc) as c:
        yield c, svc
    svc.close()


def post(c: TestClient, headers: dict[str, str]) -> Any:
    return c.post("/v1/tenants/shop-f/jobs", json={"job": "api.add", "args": [1, 2],
                                                   "queue": "parked"}, headers={**AUTH, **headers})


def test_a_failed_read_after_the_enqueue_answers_417_or_202_with_the_monitor(
        unreadable: tuple[TestClient, UnreadableAfterEnqueue], r: redis.Redis) -> None:
    c, svc = unreadable
    got = post(c, {"Prefer": "wait=0.3"})
    assert got.status_code == 417, got.text
    body = got.json()
    assert got.headers["location"] == body["job"]["monitor"] == f"/v1/jobs/{body['job']['id']}"
    assert "was enqueued" in body["detail"] and "Do not enqueue it again" in body["detail"]
    assert "nothing was enqueued" not in body["detail"]
    assert r.exists(keys.status(body["job"]["id"]))  # it was: the record is there
    # respond-async: 202 with the monitor
    got = post(c, {"Prefer": "respond-async, wait=0.2"})
    assert got.status_code == 202 and got.headers["preference-applied"] == "respond-async, wait=0.2"
    assert got.headers["location"] == got.json()["monitor"]
    # the record says final, but the final document cannot be read
    svc.state = "succeeded"
    got = post(c, {"Expect": "200-ok"})
    assert got.status_code == 417 and got.headers["location"] == got.json()["job"]["monitor"]
    assert ready_count(r, "parked") == 3


def test_an_enqueue_the_pod_does_not_answer_in_time_names_the_job_it_may_have_written(
        redis_url: str, r: redis.Redis) -> None:
    router = OnePodRouter(redis_url)
    router._backend = RedisBackend(redis_url, socket_timeout=0.2)
    router._backend.load_scripts()  # connected, scripts loaded: the enqueue is sent and
    router._backend.ping()          # runs when Redis can (both pools, the scripts' own too)
    svc = Service(router)
    busy = r.connection_pool.get_connection("EVAL")
    try:
        with client_for(svc) as c:
            # Redis is busy for 2 s (under its 5 s busy-reply threshold: the others wait, no
            # BUSY error): the script is written to Redis before the enqueue is even sent, so
            # Redis runs it first (in the order it reads them), and the enqueue's answer is late
            busy.send_command("EVAL", BUSY, 0, 2_000_000)
            got = post(c, {})
            assert got.status_code == 503, got.text
            body = got.json()
            assert "may or may not have been enqueued" in body["detail"]
            assert "nothing was enqueued" not in body["detail"]
            assert got.headers["location"] == body["monitor"] == f"/v1/jobs/{body['id']}"
            assert got.headers["retry-after"] == "5"
            # it was enqueued once Redis went on: the monitor says so
            mon = wait_until(lambda: (g := c.get(got.headers["location"], headers=AUTH))
                             .status_code == 200 and g, what="the job's record")
            assert mon.json()["state"] == "queued"
            assert ready_count(r, "parked") == 1
            assert busy.read_response() == 1
    finally:
        r.connection_pool.release(busy)
        svc.close()
