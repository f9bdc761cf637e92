"""The HTTP API on real servers: `podjobs api` in a subprocess on a free port, pod workers
for the three pods of the session cluster, and httpx as the client.

One API server serves the whole module (its own ZooKeeper root, tenants shop-a on p1,
shop-b on p2, shop-c on p3). Tests that change the topology (a draining pod, a pod whose
Redis is gone) put it back afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from podjobs import keys
from podjobs.fairshare import ready_count
from podjobs.infra.ports import free_port
from podjobs.pods.podworker import PodWorker
from podjobs.pods.topology import Pod, PodState, TopologyStore, register_topology
from podjobs.pods.zk import ZK
from podjobs.quota import Quota
from podjobs.surface.api.auth import digest
from tests.apps import api_app  # noqa: F401 - the workers run its jobs
from tests.helpers import REPO, api_server, fast_config, stop_proc, wait_until

TOKENS = {"shop-a": "token-for-shop-a-0123456789", "shop-b": "token-for-shop-b-0123456789",
          "operator": "operator-token-0123456789", "reader": "reader-token-for-shop-a-0123",
          "noop-only": "noop-only-token-for-shop-a", "expired": "expired-token-for-shop-a-012"}
TENANTS = {"shop-a": "p1", "shop-b": "p2", "shop-c": "p3"}


@dataclass
class Env:
    url: str
    zk: ZK
    store: TopologyStore
    redis: dict[str, redis.Redis]
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, who: str | None = "shop-a", **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def footprint(self) -> dict[str, Any]:
        """What an enqueue would change: status records and queued/scheduled/held jobs."""
        out: dict[str, Any] = {}
        for pod, r in self.redis.items():
            out[pod] = (sorted(r.scan_iter(match=keys.status("*"), count=1000)),
                        {k: r.llen(k) for k in r.scan_iter(match=keys.queue("*"))},
                        {k: r.zcard(k) for k in r.scan_iter(match=keys.scheduled("*"))},
                        sorted(r.scan_iter(match=keys.held("*"))))
        return out


@pytest.fixture(scope="module")
def env(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    topo = cluster.topology
    root = f"/podjobs-api-test-{uuid.uuid4().hex[:12]}"
    zk = ZK(topo.zookeeper, root)
    zk.start(10)
    register_topology(zk, topo)
    store = TopologyStore(zk)
    store.assign_many(TENANTS)
    rs = {p.name: redis.Redis.from_url(p.redis_url) for p in topo.pods}
    for r in rs.values():
        r.flushall()
    d = tmp_path_factory.mktemp("api")
    tokens = d / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [
        {"name": "a", "tenant": "shop-a", "token": TOKENS["shop-a"]},
        {"name": "b", "tenant": "shop-b", "sha256": digest(TOKENS["shop-b"]).hex()},
        {"name": "ops", "operator": True, "token": TOKENS["operator"]},
        {"name": "reader", "tenant": "shop-a", "token": TOKENS["reader"], "scopes": ["read"]},
        {"name": "noop-only", "tenant": "shop-a", "token": TOKENS["noop-only"],
         "jobs": ["api.noop"]},
        {"name": "expired", "tenant": "shop-a", "token": TOKENS["expired"],
         "expires": "2020-01-01T00:00:00Z"},
    ]}))
    log = d / "api.log"
    args = ["--zk", topo.zookeeper + root, "--tokens", str(tokens), "--app", "tests.apps.api_app",
            "--max-wait", "5", "--sync-wait", "3", "--max-body-kb", "64", "--log-level", "warning",
            "--allow-unserved-queues"]  # the tests park jobs on a queue no worker serves
    workers: list[PodWorker] = []
    try:
        with api_server(args, log, env={"PODJOBS_API_GHOST": "1"}) as (proc, url):
            for p in topo.pods:
                w = PodWorker(zk, p.name, fast_config(queues=["default"], concurrency=4))
                w.start()
                workers.append(w)
            yield Env(url, zk, store, rs, proc, log)
            for w in workers:
                w.stop()
            workers.clear()
    finally:
        for w in workers:
            w.stop()
        zk.kazoo_client.delete(root, recursive=True)
        zk.stop()


def post(c: httpx.Client, tenant: str, body: Any, **kw: Any) -> httpx.Response:
    return c.post(f"/v1/tenants/{tenant}/jobs", json=body, **kw)


def poll(c: httpx.Client, location: str, until: Any, timeout: float = 15) -> httpx.Response:
    """GET the monitor until `until(response)`."""
    got: list[httpx.Response] = []

    def done() -> bool:
        got[:] = [c.get(location)]
        return bool(until(got[0]))

    wait_until(done, timeout=timeout, what=f"{location} to match")
    return got[0]


# -- 202 -> poll -> 303 ---------------------------------------------------------------------


def test_enqueue_answers_202_with_a_monitor_that_ends_in_303(env: Env) -> None:
    with env.client() as c:
        r = post(c, "shop-a", {"job": "api.create_thing", "args": ["x1"]})
        assert r.status_code == 202, r.text
        body = r.json()
        assert r.headers["location"] == f"/v1/jobs/{body['id']}" == body["monitor"]
        assert body["state"] == "queued" and body["tenant"] == "shop-a" and body["attempts"] == 0
        done = poll(c, r.headers["location"], lambda g: g.status_code != 200)
        assert done.status_code == 303
        assert done.headers["location"] == "/things/x1"
        doc = done.json()
        assert doc["state"] == "succeeded" and doc["attempts"] == 1
        assert doc["location"] == "/things/x1" and doc["error"] is None
        assert doc["enqueued_at"] <= doc["started_at"] <= doc["finished_at"]
        # a dict result with a location does the same, and keeps the result
        r = post(c, "shop-a", {"job": "api.create_dict", "args": ["y"]})
        done = poll(c, r.headers["location"], lambda g: g.status_code == 303)
        assert done.headers["location"] == "https://example.test/things/y"
        assert done.json()["result"] == {"location": "https://example.test/things/y", "name": "y"}


def test_a_job_without_a_resource_answers_200_with_its_result(env: Env) -> None:
    with env.client() as c:
        r = post(c, "shop-a", {"job": "api.add", "args": [2, 3]})
        assert r.status_code == 202
        doc = poll(c, r.headers["location"], lambda g: g.json()["state"] == "succeeded")
        assert doc.status_code == 200
        assert doc.json()["result"] == 5 and doc.json()["location"] is None


def test_failed_and_dead_jobs_answer_200_with_the_error(env: Env) -> None:
    with env.client() as c:
        r = post(c, "shop-a", {"job": "api.fail", "args": ["broken on purpose"]})
        doc = poll(c, r.headers["location"], lambda g: g.json()["state"] == "failed").json()
        assert doc["error"] == {"class": "RuntimeError", "message": "broken on purpose"}
        assert doc["reason"] == "retries_exhausted" and doc["attempts"] == 1
        assert doc["finished_at"] is not None
        # known to the API, unknown to the workers: the platform refuses it -> dead
        r = post(c, "shop-a", {"job": "api.ghost"})
        doc = poll(c, r.headers["location"], lambda g: g.json()["state"] == "dead").json()
        assert doc["reason"] == "unknown_job" and doc["error"]["class"] == "UnknownJob"


def test_a_retrying_job_shows_its_attempts_and_next_run(env: Env) -> None:
    with env.client() as c:
        r = post(c, "shop-a", {"job": "api.fail_slowly", "args": ["again"]})
        mon = r.headers["location"]
        doc = poll(c, mon, lambda g: g.json()["state"] == "retrying").json()
        assert doc["attempts"] == 1 and doc["max_attempts"] == 2
        assert doc["error"]["message"] == "again" and doc["run_at"] is not None
        doc = poll(c, mon, lambda g: g.json()["state"] == "failed").json()
        assert doc["attempts"] == 2


def test_an_iteration_job_shows_its_progress(env: Env) -> None:
    with env.client("shop-b") as c:
        r = post(c, "shop-b", {"job": "api.steps", "kwargs": {"n": 20, "sleep": 0.05}})
        assert r.status_code == 202, r.text
        mon = r.headers["location"]
        doc = poll(c, mon, lambda g: g.json()["state"] == "running"
                   and (g.json()["progress"] or {}).get("done", 0) > 0).json()
        assert doc["progress"]["total"] == 20 and 0 < doc["progress"]["done"] < 20
        doc = poll(c, mon, lambda g: g.json()["state"] == "succeeded").json()
        assert doc["progress"]["done"] == 20 and doc["progress"]["percent"] == 100.0


# -- DELETE: cancel a job that has not started ------------------------------------------------


def test_delete_cancels_a_queued_or_scheduled_job_and_refuses_a_started_one(env: Env) -> None:
    r1 = env.redis["p1"]
    with env.client() as c:
        # no worker serves queue "parked": the job waits there
        r = post(c, "shop-a", {"job": "api.add", "args": [1, 1], "queue": "parked"})
        assert r.status_code == 202 and r.json()["queue"] == "parked"
        assert ready_count(r1, "parked") == 1
        d = c.delete(r.headers["location"])
        assert d.status_code == 200, d.text
        assert d.json()["state"] == "cancelled" and d.json()["reason"] == "cancelled"
        assert ready_count(r1, "parked") == 0
        assert c.get(r.headers["location"]).json()["state"] == "cancelled"
        assert c.delete(r.headers["location"]).status_code == 200  # idempotent
        # a job due in an hour waits in the scheduled set
        r = post(c, "shop-a", {"job": "api.add", "args": [1, 2], "delay": 3600})
        assert r.json()["run_at"] > r.json()["enqueued_at"]
        assert r1.zcard(keys.scheduled("default")) == 1
        assert c.delete(r.headers["location"]).json()["state"] == "cancelled"
        assert r1.zcard(keys.scheduled("default")) == 0
        # a running job cannot be cancelled; neither can a finished one
        r = post(c, "shop-a", {"job": "api.slow", "args": [1.0]})
        poll(c, r.headers["location"], lambda g: g.json()["state"] == "running")
        d = c.delete(r.headers["location"])
        assert d.status_code == 409 and d.json()["job"]["state"] == "running"
        poll(c, r.headers["location"], lambda g: g.json()["state"] == "succeeded")
        assert c.delete(r.headers["location"]).status_code == 409


def test_cancelling_a_unique_job_frees_its_key(env: Env) -> None:
    with env.client() as c:
        body = {"job": "api.unique", "args": [uuid.uuid4().hex], "queue": "parked"}
        r = post(c, "shop-a", body)
        assert r.status_code == 202
        dup = post(c, "shop-a", body)
        assert dup.status_code == 409 and "already pending" in dup.json()["detail"]
        assert c.delete(r.headers["location"]).status_code == 200
        again = post(c, "shop-a", body)
        assert again.status_code == 202
        assert c.delete(again.headers["location"]).status_code == 200


# -- synchronous on request: Expect / Prefer, and 417 ---------------------------------------------


def test_prefer_wait_gets_201_created_with_the_resource(env: Env) -> None:
    with env.client() as c:
        r = post(c, "shop-a", {"job": "api.create_thing", "args": ["sync"]},
                 headers={"Prefer": "wait=5"})
        assert r.status_code == 201, r.text
        assert r.headers["location"] == "/things/sync"
        assert r.headers["content-location"] == r.json()["monitor"]
        assert r.headers["preference-applied"] == "wait=5"
        assert r.json()["state"] == "succeeded"


def test_expect_200_204_and_a_failure_answer_synchronously(env: Env) -> None:
    with env.client() as c:
        r = post(c, "shop-a", {"job": "api.add", "args": [20, 22]}, headers={"Expect": "200-ok"})
        assert r.status_code == 200 and r.json()["result"] == 42
        assert "preference-applied" not in r.headers
        r = post(c, "shop-a", {"job": "api.noop"}, headers={"Expect": "204-no-content"})
        assert r.status_code == 204 and r.content == b""
        assert r.headers["content-location"].startswith("/v1/jobs/")
        r = post(c, "shop-a", {"job": "api.fail", "args": ["sync failure"]},
                 headers={"Expect": "201-created", "Prefer": "wait=4"})
        assert r.status_code == 200
        assert r.json()["state"] == "failed" and r.json()["error"]["message"] == "sync failure"


def test_expect_202_accepted_is_asynchronous_even_with_prefer_wait(env: Env) -> None:
    """A quick job that `Prefer: wait=5` alone answers 200 with its result (the next test)
    is answered 202, queued, under `Expect: 202-accepted`: the answer did not wait for it
    (an order, not a stopwatch: had the API waited, the job would have finished first)."""
    with env.client() as c:
        r = post(c, "shop-a", {"job": "api.add", "args": [2, 3]},
                 headers={"Expect": "202-accepted", "Prefer": "wait=5"})
        assert r.status_code == 202 and r.json()["state"] == "queued", r.text
        done = poll(c, r.headers["location"], lambda g: g.json().get("state") == "succeeded")
        assert done.json()["result"] == 5


def test_prefer_respond_async_waits_then_falls_back_to_202(env: Env) -> None:
    with env.client() as c:
        r = post(c, "shop-a", {"job": "api.add", "args": [1, 2]},
                 headers={"Prefer": "respond-async, wait=5"})
        assert r.status_code == 200 and r.json()["result"] == 3
        r = post(c, "shop-a", {"job": "api.slow", "args": [4.0]},
                 headers={"Prefer": "respond-async, wait=2"})
        assert r.status_code == 202 and r.headers["preference-applied"] == "respond-async, wait=2"
        # the document as it is after the wait (running), not the one from enqueue (queued)
        assert r.json()["state"] == "running" and r.json()["attempts"] == 1
        poll(c, r.headers["location"], lambda g: g.json()["state"] == "succeeded")


def test_417_when_a_synchronous_answer_cannot_be_given(env: Env) -> None:
    with env.client() as c:
        before = env.footprint()
        for body, headers in [
            ({"job": "api.steps", "kwargs": {"n": 3}}, {"Expect": "201-created"}),  # iteration
            ({"job": "api.later_only"}, {"Prefer": "wait=3"}),  # async_only option
            ({"job": "api.add", "args": [1, 1]}, {"Expect": "299-whatever"}),  # unknown expectation
            ({"job": "api.add", "args": [1, 1]}, {"Expect": "202-accepted, 200-ok"}),
            ({"job": "api.add", "args": [1, 1], "delay": 10}, {"Prefer": "wait=3"}),  # due too late
            ({"job": "api.add", "args": [1, 1]}, {"Prefer": "wait=0"}),
        ]:
            r = post(c, "shop-a", body, headers=headers)
            assert r.status_code == 417, (body, headers, r.text)
            assert "nothing was enqueued" in r.json()["detail"]
        assert env.footprint() == before
        # an asynchronous-only job is fine without a synchronous demand
        assert post(c, "shop-a", {"job": "api.later_only"}).status_code == 202


def test_417_after_the_wait_cancels_an_unstarted_job_or_points_at_a_running_one(env: Env) -> None:
    r1 = env.redis["p1"]
    with env.client() as c:
        r = post(c, "shop-a", {"job": "api.add", "args": [1, 1], "queue": "parked"},
                 headers={"Prefer": "wait=0.3"})
        assert r.status_code == 417 and "location" not in r.headers
        assert r.json()["job"]["state"] == "cancelled"
        assert ready_count(r1, "parked") == 0
        # an idle worker starts it within the 2 s; it runs 3 s
        r = post(c, "shop-a", {"job": "api.slow", "args": [3.0]}, headers={"Prefer": "wait=2"})
        assert r.status_code == 417
        assert r.json()["job"]["state"] == "running"
        assert r.headers["location"] == r.json()["job"]["monitor"]
        done = poll(c, r.headers["location"], lambda g: g.json()["state"] == "succeeded")
        assert done.json()["result"] == "slept"


# -- errors: each writes nothing ---------------------------------------------------------------


def test_every_refused_enqueue_writes_nothing(env: Env) -> None:
    before = env.footprint()
    with env.client() as c, env.client(None) as anon, env.client("operator") as ops:
        cases: list[tuple[int, httpx.Response]] = [
            (401, post(anon, "shop-a", {"job": "api.add", "args": [1, 2]})),
            (401, post(anon, "shop-a", {"job": "api.add"},
                       headers={"Authorization": "Bearer not-a-token-of-ours"})),
            (401, post(anon, "shop-a", {"job": "api.add"},
                       headers={"Authorization": f"Basic {TOKENS['shop-a']}"})),
            (404, post(ops, "nobody", {"job": "api.add", "args": [1, 2]})),
            (404, post(c, "shop-b", {"job": "api.add", "args": [1, 2]})),  # another tenant
            (422, post(c, "shop-a", {"job": "api.nope"})),
            (422, post(c, "shop-a", {"job": "api.add", "args": [1]})),
            (422, post(c, "shop-a", {"job": "api.add", "args": [1, 2], "kwargs": {"c": 3}})),
            (422, post(c, "shop-a", {"job": "api.add", "args": {"a": 1}})),
            (422, post(c, "shop-a", {"job": "api.add", "args": [1, 2], "queue": "a,b"})),
            (422, post(c, "shop-a", {"job": "api.add", "args": [1, 2], "delay": -1})),
            (422, post(c, "shop-a", {"job": "api.add", "args": [1, 2], "priority": 1})),
            (422, post(c, "shop-a", [1, 2])),
            (400, c.post("/v1/tenants/shop-a/jobs", content=b'{"job": "api.add", "args": [1,',
                         headers={"Content-Type": "application/json"})),
            (400, c.post("/v1/tenants/shop-a/jobs", content=b'{"job": "api.add", "args": [NaN, 1]}',
                         headers={"Content-Type": "application/json"})),
            (400, c.post("/v1/tenants/shop-a/jobs", content=b"[" * 20_000 + b"]" * 20_000)),
            (413, post(c, "shop-a", {"job": "api.add", "args": ["x" * 70_000, 1]})),
            (422, c.post("/v1/tenants/shop-a/jobs", content=b'{"job": "api.add", "args": [1e400, 1]}',
                         headers={"Content-Type": "application/json"})),
            (422, c.post("/v1/tenants/shop-a/jobs", content=b'{"job": "api.add", "args": ["\\ud800", 1]}',
                         headers={"Content-Type": "application/json"})),
            (415, c.post("/v1/tenants/shop-a/jobs", content=b"job=api.add",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})),
        ]
        for want, r in cases:
            assert r.status_code == want, (want, r.request.content[:200], r.text[:300])
            assert "detail" in r.json()
        assert cases[0][1].headers["www-authenticate"].startswith("Bearer")
        unknown = cases[5][1].json()
        assert "api.nope" in unknown["detail"] and unknown["errors"][0]["loc"] == ["body", "job"]
        assert "arguments do not fit api.add" in cases[6][1].json()["detail"]
        assert "1e400 is not a finite number" in cases[17][1].json()["detail"]
        assert cases[18][1].json()["errors"][0]["loc"] == ["body", "args", 0]
        # a body streamed without Content-Length is cut off at the limit too
        chunks = iter([b'{"job": "api.add", "args": ["', b"y" * 70_000, b'", 1]}'])
        r = c.post("/v1/tenants/shop-a/jobs", content=chunks,
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 413
    assert env.footprint() == before


def test_a_draining_pod_answers_503_with_retry_after(env: Env) -> None:
    before = env.footprint()
    env.store.set_pod_state("p3", PodState.DRAINING)
    try:
        with env.client("operator") as c:
            r = wait_until(lambda: (x := post(c, "shop-c", {"job": "api.add", "args": [1, 2]}))
                           .status_code == 503 and x, timeout=10, what="the API to see p3 draining")
            assert r.headers["retry-after"] == "30" and "draining" in r.json()["detail"]
            assert env.footprint() == before
    finally:
        env.store.set_pod_state("p3", PodState.ACTIVE)
    with env.client("operator") as c:
        wait_until(lambda: post(c, "shop-c", {"job": "api.add", "args": [1, 2]}).status_code == 202,
                   timeout=10, what="p3 active again")


def test_arguments_that_do_not_fit_the_annotations_get_422_naming_the_argument(env: Env) -> None:
    before = env.footprint()
    with env.client() as c:
        r = post(c, "shop-a", {"job": "api.add", "args": ["1", 2]})
        assert r.status_code == 422, r.text
        err = r.json()["errors"][0]
        assert err["loc"] == ["body", "args", 0] and "argument 'a' of api.add" in err["msg"]
        assert "argument 'a'" in r.json()["detail"] and "valid integer" in r.json()["detail"]
        r = post(c, "shop-a", {"job": "api.add", "args": [1], "kwargs": {"b": [2]}})
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "kwargs", "b"]
        assert env.footprint() == before
        r = post(c, "shop-a", {"job": "api.add", "args": [1], "kwargs": {"b": 2}},
                 headers={"Prefer": "wait=10"})
        assert r.status_code in (200, 201), r.text


def test_a_tenant_over_its_quota_gets_429_with_retry_after_and_nothing_written(env: Env) -> None:
    env.store.set_tenant_quota("shop-c", Quota(rate=0.01, burst=1))  # one job per 100 s
    try:
        with env.client("operator") as c:
            wait_until(lambda: post(c, "shop-c", {"job": "api.add", "args": [1, 2]}).status_code
                       == 429, timeout=10, what="the API to see shop-c's quota")
            before = env.footprint()
            r = post(c, "shop-c", {"job": "api.add", "args": [1, 2]})
            assert r.status_code == 429, r.text
            assert 90 <= int(r.headers["retry-after"]) <= 100
            detail = r.json()["detail"]
            assert "'shop-c' is over its enqueue rate quota (0.01 jobs/s)" in detail
            assert "nothing was enqueued" in detail
            assert env.footprint() == before
            assert post(c, "shop-a", {"job": "api.add", "args": [1, 2]}).status_code == 202
    finally:
        env.store.set_tenant_quota("shop-c", None)
    with env.client("operator") as c:
        wait_until(lambda: post(c, "shop-c", {"job": "api.add", "args": [1, 2]}).status_code == 202,
                   timeout=10, what="shop-c's quota lifted")


def test_an_unreachable_redis_answers_503_with_retry_after(env: Env) -> None:
    dead_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env.store.add_pod(Pod("p9", dead_url, "sqlite:////nonexistent/p9.db"))
    env.store.assign("shop-z", "p9")
    try:
        with env.client("operator") as c:
            before = env.footprint()
            r = wait_until(lambda: (x := post(c, "shop-z", {"job": "api.add", "args": [1, 2]}))
                           .status_code == 503 and x, timeout=10, what="503 for a pod without Redis")
            assert r.headers["retry-after"] == "5" and "unreachable" in r.json()["detail"]
            assert env.footprint() == before
            # the operator views say so too; a job search that cannot read p9 answers 503
            pods = {p["name"]: p for p in c.get("/v1/pods").json()}
            assert pods["p9"]["reachable"] is False and pods["p1"]["reachable"] is True
            q = c.get("/v1/pods/p9/queues")
            assert q.status_code == 503 and q.headers["retry-after"] == "5"
            g = c.get("/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV")
            assert g.status_code == 503
    finally:
        TopologyStore(env.zk).remove_tenant("shop-z")
        env.zk.kazoo_client.delete(env.zk.path("pods", "p9"))
    with env.client("operator") as c:
        wait_until(lambda: c.get("/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV").status_code == 404,
                   timeout=10, what="p9 gone from the API's directory")


class SilentPods:
    """Redis addresses that accept connections and never answer, with the order in which the
    API opened connections to them and dropped them (a read timing out drops its
    connection): a log of events instead of a stopwatch."""

    def __init__(self, names: list[str]) -> None:
        #: ("open" | "drop", pod, connection number), in the order they happened
        self.events: list[tuple[str, str, int]] = []
        self.socks: dict[str, socket.socket] = {}
        self._markers: set[int] = set()  # local ports of barrier connections
        self._marked: set[int] = set()
        self._n = 0
        for name in names:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(64)
            self.socks[name] = s
            threading.Thread(target=self._accept, args=(name, s), daemon=True).start()

    def url(self, name: str) -> str:
        return f"redis://127.0.0.1:{self.socks[name].getsockname()[1]}/0"

    def _accept(self, name: str, s: socket.socket) -> None:
        while True:
            try:
                conn, peer = s.accept()
            except OSError:
                return  # closed
            if peer[1] in self._markers:
                self._marked.add(peer[1])
                conn.close()
                continue
            self._n += 1
            self.events.append(("open", name, self._n))
            threading.Thread(target=self._until_dropped, args=(name, conn, self._n),
                             daemon=True).start()

    def _until_dropped(self, name: str, conn: socket.socket, n: int) -> None:
        with conn:
            while True:
                try:
                    if not conn.recv(4096):
                        break
                except OSError:
                    break
        self.events.append(("drop", name, n))

    def barrier(self) -> int:
        """A mark in the log after every connection opened before now: a marker connection
        to each pod, seen by its accept loop after the earlier ones (accepts are in order)."""
        for s in self.socks.values():
            m = socket.socket()
            m.bind(("127.0.0.1", 0))
            port = m.getsockname()[1]
            self._markers.add(port)
            m.connect(s.getsockname())
            wait_until(lambda port=port: port in self._marked, what="the barrier's marker")
            m.close()
        return len(self.events)

    def opened_since(self, mark: int) -> list[tuple[str, str, int]]:
        return [e for e in self.events[mark:] if e[0] == "open"]

    def close(self) -> None:
        for s in self.socks.values():
            s.close()


def test_unresponsive_pods_are_read_at_once_and_not_for_a_tenants_own_job(env: Env) -> None:
    """Two pods whose Redis accepts connections and never answers: a job search and the
    pods view read them at once (both connections open before the first read timeout drops
    one), each read bounded by --read-timeout; a tenant's own job is read on its pod only.
    What a request then costs (about one read timeout) is a figure, not asserted here."""
    silent = SilentPods(["p8", "p9"])
    for name in ("p8", "p9"):
        env.store.add_pod(Pod(name, silent.url(name), "sqlite:////nonexistent/x.db"))

    def at_once(mark: int) -> None:
        def first(name: str) -> int:
            return next(n for _, pod, n in silent.opened_since(mark) if pod == name)

        wait_until(lambda: {"p8", "p9"} <= {pod for _, pod, _ in silent.opened_since(mark)},
                   what="connections to p8 and p9")
        mine = {first("p8"), first("p9")}
        wait_until(lambda: mine <= {n for kind, _, n in silent.events if kind == "drop"},
                   what="both reads to time out and drop their connections")
        ev = [(kind, n) for kind, _, n in silent.events if n in mine]
        assert [kind for kind, _ in ev[:2]] == ["open", "open"], ev  # both before any drop

    try:
        with env.client("operator") as ops, env.client("shop-a") as a:
            wait_until(lambda: len(ops.get("/v1/pods").json()) == 5, timeout=30,
                       what="the API to see p8 and p9")
            mark = silent.barrier()
            g = ops.get("/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV")
            assert g.status_code == 503 and "p8" in g.json()["detail"] and "p9" in g.json()["detail"]
            at_once(mark)
            mark = silent.barrier()
            pods = {p["name"]: p for p in ops.get("/v1/pods").json()}
            assert not pods["p8"]["reachable"] and not pods["p9"]["reachable"]
            assert pods["p1"]["reachable"]
            at_once(mark)
            # a tenant's own job is found on its pod without reading the others
            r = post(a, "shop-a", {"job": "api.add", "args": [1, 1], "queue": "parked"})
            mark = silent.barrier()
            assert a.get(r.headers["location"]).status_code == 200
            silent.barrier()
            assert silent.opened_since(mark) == [], silent.events[mark:]
            assert a.delete(r.headers["location"]).status_code == 200
    finally:
        for name in ("p8", "p9"):
            env.zk.kazoo_client.delete(env.zk.path("pods", name))
        silent.close()


# -- tenant scoping ------------------------------------------------------------------------------


def test_a_tenant_token_sees_only_its_own_jobs(env: Env) -> None:
    with env.client("shop-a") as a, env.client("shop-b") as b, env.client("operator") as ops:
        r = post(b, "shop-b", {"job": "api.add", "args": [1, 1], "queue": "parked"})
        assert r.status_code == 202
        mon = r.headers["location"]
        ga, gb = a.get(mon), b.get(mon)
        assert ga.status_code == 404 and gb.status_code == 200
        other = a.get("/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV").json()["detail"]
        assert ga.json()["detail"] == other.replace("01ARZ3NDEKTSV4RRFFQ69G5FAV", r.json()["id"])
        assert a.delete(mon).status_code == 404
        assert ops.get(mon).json()["tenant"] == "shop-b"
        assert b.delete(mon).status_code == 200
        for bad in ("not-an-id", "01arz3ndektsv4rrffq69g5fav", "x" * 26):
            assert ops.get(f"/v1/jobs/{bad}").status_code == 404


# -- operators -------------------------------------------------------------------------------------


def test_operator_endpoints(env: Env) -> None:
    with env.client("operator") as ops, env.client("shop-a") as a, env.client(None) as anon:
        r = post(ops, "shop-a", {"job": "api.add", "args": [5, 5], "queue": "parked"})
        pods = ops.get("/v1/pods")
        assert pods.status_code == 200
        by = {p["name"]: p for p in pods.json()}
        assert set(by) >= {"p1", "p2", "p3"}
        assert by["p1"]["state"] == "active" and by["p1"]["reachable"]
        assert len(by["p1"]["workers"]) == 1 and by["p1"]["workers"][0]["queues"] == ["default"]
        queues = ops.get("/v1/pods/p1/queues")
        assert queues.status_code == 200
        parked = {q["name"]: q for q in queues.json()}["parked"]
        assert parked["size"] >= 1
        assert ops.get("/v1/pods/p7/queues").status_code == 404
        assert a.get("/v1/pods").status_code == 403
        assert a.get("/v1/pods/p1/queues").status_code == 403
        assert anon.get("/v1/pods").status_code == 401
        h = anon.get("/healthz")
        assert h.status_code == 200 and h.json() == {"status": "ok", "zookeeper": "connected", "pods": 3}
        assert ops.delete(r.headers["location"]).status_code == 200


def test_migrations_endpoint_serves_what_migrations_status_json_prints(env: Env) -> None:
    from podjobs.scheduler import paths
    from podjobs.scheduler.runs import Run, RunState, RunStore

    zk = env.zk
    zk.create_json(paths.revisions(zk), {"order": ["0001", "0002"], "head": "0002"})
    for pod, cur in (("p1", "0002"), ("p2", "0001"), ("p3", "0001")):
        zk.create_json(paths.shard(zk, pod), {"current": cur, "error": "", "checked_at": 1.0})
    store = RunStore(zk)
    store.create(Run("p2", "0002", RunState.FAILED, job_id="j2", error="boom: step 1"))
    store.create(Run("p3", "0002", RunState.RUNNING, job_id="j3", worker="w3", started_at=2.0))
    store.halt("0002", "p2", "boom: step 1")
    try:
        with env.client("operator") as ops, env.client("shop-a") as a:
            r = ops.get("/v1/migrations")
            assert r.status_code == 200, r.text
            assert a.get("/v1/migrations").status_code == 403
        got = r.json()
        assert got["head"] == "0002" and got["halts"]["0002"]["error"] == "boom: step 1"
        by = {s["pod"]: s for s in got["shards"]}
        assert by["p1"]["current"] == "0002" and by["p1"]["pending"] == []
        assert by["p2"]["failures"][0]["error"] == "boom: step 1"
        assert by["p3"]["running"][0]["worker"] == "w3" and by["p3"]["pending"] == ["0002"]
        cli = subprocess.run(
            [sys.executable, "-m", "podjobs.cli", "migrations", "status", "--json", "--zk",
             f"{zk.hosts}{zk.root}"], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == got
        # the same rollout, and every pod's gauges, for Prometheus (no token, as exporters go)
        from prometheus_client.parser import text_string_to_metric_families

        m = httpx.get(env.url + "/metrics", timeout=10)
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
        vals = {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(m.text) for s in f.samples}
        assert {vals[("podjobs_pod_up", (("pod", p),))] for p in ("p1", "p2", "p3")} == {1.0}
        assert vals[("podjobs_migration_pending", (("pod", "p3"),))] == 1
        assert vals[("podjobs_migration_runs", (("pod", "p2"), ("revision", "0002"), ("state", "failed")))] == 1
        assert vals[("podjobs_migration_halts", ())] == 1
        zk.create_json(paths.periodic(zk, "app.hourly", "_one"), {"last_tick": 1_700_000_000})
        m = httpx.get(env.url + "/metrics", timeout=10)
        ticks = {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(m.text)
                 for s in f.samples if s.name == "podjobs_periodic_last_tick_timestamp_seconds"}
        assert ticks == {(("job", "app.hourly"), ("target", "_one")): 1_700_000_000}
    finally:
        zk.delete(zk.path("migrations"), recursive=True)
        zk.delete(zk.path("periodic"), recursive=True)


# -- the OpenAPI document, and a property-based run over it --------------------------------------


def test_openapi_document_describes_the_api(env: Env) -> None:
    doc = httpx.get(env.url + "/openapi.json").json()
    post_op = doc["paths"]["/v1/tenants/{tenant}/jobs"]["post"]
    assert set(post_op["responses"]) >= {"200", "201", "202", "204", "400", "401", "404", "409",
                                         "413", "415", "417", "422", "429", "503"}
    assert {p["name"] for p in post_op["parameters"] if p["in"] == "header"} == {"expect", "prefer"}
    body = post_op["requestBody"]["content"]["application/json"]["schema"]
    assert "api.create_thing" in body["properties"]["job"]["enum"]
    per_job = {s["properties"]["job"]["const"]: s for s in body["anyOf"]}
    assert set(per_job) == set(body["properties"]["job"]["enum"])
    add = per_job["api.add"]
    assert add["description"].startswith("api.add(a: int, b: int)")
    assert add["anyOf"][2]["properties"]["args"]["prefixItems"] == [{"type": "integer"}] * 2
    assert [p for p in add["anyOf"][0]["properties"]["kwargs"]["required"]] == ["a", "b"]
    assert "ctx" not in json.dumps(per_job["api.slow"])  # the context is not an argument
    assert per_job["api.slow"]["anyOf"][1]["properties"]["args"]["prefixItems"] == [{"type": "number"}]
    assert per_job["api.noop"]["properties"]["args"]["maxItems"] == 0  # no arguments: one variant
    assert set(doc["paths"]["/v1/jobs/{job_id}"]) == {"get", "delete"}
    assert "303" in doc["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert set(doc["paths"]["/v1/migrations"]["get"]["responses"]) >= {"200", "401", "403", "503"}


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_property_based_run_over_the_openapi_document_finds_no_server_error(env: Env) -> None:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(env.url + "/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    seen: Counter[tuple[str, int]] = Counter()

    def fuzz(strategy: Any, token: str) -> None:
        @settings(max_examples=20, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case: Any) -> None:
            r = case.call_and_validate(base_url=env.url, checks=checks, timeout=30,
                                       headers={"Authorization": f"Bearer {token}"})
            seen[(case.operation.label, r.status_code)] += 1

        run()

    for result in schema.get_all_operations():
        op = result.ok()
        variants: list[dict[str, Any]] = [{}]
        if "{tenant}" in op.path:
            variants.append({"path_parameters": {"tenant": "shop-a"}})
            variants.append({"path_parameters": {"tenant": "shop-a"},
                             "headers": {"Expect": "202-accepted"}})
        for who in ("operator", "shop-a"):
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                for extra in variants:
                    try:
                        fuzz(op.as_strategy(mode, **extra), TOKENS[who])
                    except Unsatisfiable:  # nothing to negate (no parameters, no body)
                        assert mode is schemathesis.GenerationMode.NEGATIVE, op.label
    print(sorted(seen.items()))
    codes = {code for _, code in seen}
    assert sum(seen.values()) > 200 and max(codes) < 500
    assert {200, 202, 400, 404, 422} <= codes, codes
    assert env.proc.poll() is None
    assert "Traceback" not in env.log.read_text()


def test_two_server_processes_serve_one_port_and_stop_together(
        env: Env, tmp_path: Path) -> None:
    port = free_port()
    tokens = tmp_path / "t.json"
    tokens.write_text(json.dumps({"tokens": [{"operator": True, "token": TOKENS["operator"]}]}))
    root = env.zk.root
    hosts = env.zk.hosts
    proc = subprocess.Popen(
        [sys.executable, "-m", "podjobs.cli", "api", "--port", str(port), "--zk", hosts + root,
         "--tokens", str(tokens), "--app", "tests.apps.api_app", "--workers", "2",
         "--log-level", "warning"], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        def children() -> list[int]:
            out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
            return [int(x) for x in out.stdout.split()]

        def up() -> bool:
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(lambda: up() and len(children()) >= 2, timeout=30, what="two server processes")
        kids = children()
        headers = {"Authorization": f"Bearer {TOKENS['operator']}"}
        for i in range(10):  # new connections: the kernel spreads them over both sockets
            r = httpx.post(f"{url}/v1/tenants/shop-a/jobs", headers=headers,
                           json={"job": "api.add", "args": [i, 1]})
            assert r.status_code == 202
        assert stop_proc(proc) == 0
        wait_until(lambda: not any(os.path.exists(f"/proc/{k}") for k in kids), timeout=15,
                   what="the server processes to stop")
    finally:
        stop_proc(proc, timeout=5)


# -- tenant isolation (issue 16): what a tenant token may enqueue, and small mismatches --------


def test_only_jobs_declared_for_http_on_their_allowed_queues(env: Env) -> None:
    """A job without @job(api=...) answers like an unknown one; a queue the job does not
    allow is refused naming the allowed ones; nothing is written either way."""
    with env.client() as c:
        before = env.footprint()
        r = post(c, "shop-a", {"job": "api.put_back"})  # a job not declared for HTTP
        assert r.status_code == 422 and "@podjobs.job(api=True)" in r.json()["detail"]
        assert post(c, "shop-a", {"job": "api.nope"}).json()["detail"] == r.json()["detail"].replace(
            "api.put_back", "api.nope")  # answered like an unknown job
        r = post(c, "shop-a", {"job": "api.noop", "queue": "critical"})
        assert r.status_code == 422 and "allowed: default, parked" in r.json()["detail"]
        assert env.footprint() == before
        r = post(c, "shop-a", {"job": "api.add", "args": [1, 1], "queue": "parked"})  # allowed
        assert r.status_code == 202, r.text


def test_token_scopes_jobs_and_expiry(env: Env) -> None:
    with env.client("shop-a") as a:
        r = post(a, "shop-a", {"job": "api.add", "args": [2, 2]})
        assert r.status_code == 202
        monitor = r.headers["location"]
    with env.client("reader") as reader:
        assert reader.get(monitor).status_code == 200  # may read
        r = post(reader, "shop-a", {"job": "api.add", "args": [1, 1]})
        assert r.status_code == 403 and "may not enqueue" in r.json()["detail"]
        r = reader.delete(monitor)
        assert r.status_code == 403 and "'cancel' scope" in r.json()["detail"]
    with env.client("noop-only") as only:
        assert post(only, "shop-a", {"job": "api.noop"}).status_code == 202
        r = post(only, "shop-a", {"job": "api.add", "args": [1, 1]})
        assert r.status_code == 403 and "may not enqueue 'api.add'" in r.json()["detail"]
    with env.client("expired") as old:
        r = old.get(monitor)
        assert r.status_code == 401 and "expired at 2020-01-01T00:00:00Z" in r.json()["detail"]


def test_another_tenants_record_is_never_read(env: Env) -> None:
    """Only the record's tenant is read before the check: a job of shop-a asked for by
    shop-b costs one HMGET, like a missing one (Redis MONITOR shows the commands)."""
    with env.client("shop-a") as a:
        r = post(a, "shop-a", {"job": "api.add", "args": [3, 3], "queue": "parked"})
        jid = r.json()["id"]
    r1 = env.redis["p1"]
    with r1.monitor() as m, env.client("shop-b") as b:
        assert b.get(f"/v1/jobs/{jid}").status_code == 404
        seen: list[str] = []
        for _ in range(5000):  # the pod's workers talk to Redis too (heartbeats, idle waits)
            cmd = m.next_command()["command"]
            seen.append(cmd)
            if "HMGET" in cmd.upper() and jid in cmd:
                break
        assert any(jid in c for c in seen)
    # the monitor stops at the HMGET; no HGETALL of the record may come before it
    assert not [c for c in seen if c.upper().startswith("HGETALL") and keys.status(jid) in c]


def test_answers_agree_with_what_follows(env: Env) -> None:
    """enqueued_at of the 202 is the record's (Redis' clock); OPTIONS lists the methods."""
    with env.client() as c:
        r = post(c, "shop-a", {"job": "api.add", "args": [4, 4], "queue": "parked"})
        later = c.get(r.headers["location"]).json()
        assert r.json()["enqueued_at"] == later["enqueued_at"]
        o = c.options(r.headers["location"])
        assert o.status_code == 204 and o.headers["allow"] == "GET, DELETE, OPTIONS"
        assert c.options("/v1/tenants/shop-a/jobs").headers["allow"] == "POST, OPTIONS"


def test_a_queue_no_worker_serves_is_refused(env: Env, tmp_path: Path) -> None:
    """Without --allow-unserved-queues, a queue no live worker of the tenant's pod serves is
    refused (422) naming the served queues; nothing is written."""
    tokens = tmp_path / "t.json"
    tokens.write_text(json.dumps({"tokens": [{"name": "a", "tenant": "shop-a",
                                              "token": TOKENS["shop-a"]}]}))
    audit = tmp_path / "audit.jsonl"
    args = ["--zk", f"{env.zk.hosts}{env.zk.root}", "--tokens", str(tokens),
            "--app", "tests.apps.api_app", "--log-level", "warning", "--audit-log", str(audit)]
    with api_server(args, tmp_path / "api.log") as (_, url):
        before = env.footprint()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKENS['shop-a']}"},
                          timeout=30) as c:
            r = post(c, "shop-a", {"job": "api.add", "args": [1, 1], "queue": "parked"})
            assert r.status_code == 422, r.text
            assert "no live worker of pod p1 serves queue 'parked'" in r.json()["detail"]
            assert "the queues served: default" in r.json()["detail"]
            assert env.footprint() == before
            ok = post(c, "shop-a", {"job": "api.add", "args": [1, 1]})
            assert ok.status_code == 202
        # tokens managed by command: added (hash only in the file), used, revoked
        def token_cmd(*a: str) -> dict[str, Any]:
            out = subprocess.run([sys.executable, "-m", "podjobs.cli", "api", "token", *a,
                                  "--tokens", str(tokens), "--json"], cwd=REPO, capture_output=True,
                                 text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            return dict(json.loads(out.stdout))

        added = token_cmd("add", "--tenant", "shop-a", "--name", "ci", "--no-check",
                          "--scopes", "enqueue,read")
        assert added["token"] not in tokens.read_text()  # only its SHA-256 is stored
        h = {"Authorization": f"Bearer {added['token']}"}

        def answers() -> int:
            return httpx.post(f"{url}/v1/tenants/shop-a/jobs", json={"job": "api.noop"}, headers=h,
                              timeout=10).status_code

        wait_until(lambda: answers() == 202, timeout=10, what="the added token to work")
        token_cmd("revoke", "ci")
        wait_until(lambda: answers() == 401, timeout=10, what="the revoked token to be refused")
        lines = [json.loads(x) for x in audit.read_text().splitlines()]
        refused = [x for x in lines if x["status"] == 422]
        assert refused and refused[0]["token"] == "a" and refused[0]["action"] == "enqueue"
        enq = [x for x in lines if x["status"] == 202 and x["token"] == "a"]
        assert enq[0]["job"] == ok.json()["id"] and enq[0]["tenant"] == "shop-a"
        assert any(x["status"] == 401 and x["token"] is None for x in lines)
