"""The HTTP API's job routes on a pod of each backend (the `probe` fixture: a Redis pod, or a
pod declared `backend: sql` whose queue and status records live in tables of the probe's
database: sqlite by default, mariadb and postgres with PODJOBS_TEST_BACKENDS=all): `podjobs
api` in a subprocess, a pod worker in this one, httpx as the client. The same requests get
the same answers on each: 202 with a monitor, 303 See Other to the created resource, 201 with
Prefer: wait, DELETE of a queued or scheduled job, 409 for a running one, 200 with the error
of a failed one."""

from __future__ import annotations

import json
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

import httpx

from podjobs.infra.topofile import Topology
from podjobs.pods.podworker import PodWorker
from podjobs.pods.topology import TopologyStore, register_topology
from podjobs.pods.zk import ZK
from tests.apps import api_app  # noqa: F401 - the pod worker runs its jobs
from tests.backends import Probe
from tests.helpers import api_server, fast_config, wait_until

TOKEN = "token-for-shop-a-0123456789"


def poll(c: httpx.Client, location: str, until: Any, timeout: float = 15) -> httpx.Response:
    got: list[httpx.Response] = []

    def done() -> bool:
        got[:] = [c.get(location)]
        return bool(until(got[0]))

    wait_until(done, timeout=timeout, what=f"{location} to match")
    return got[0]


def test_job_routes_on_a_pod_of_each_backend(probe: Probe, cluster: Any, zk: ZK,
                                             tmp_path: Path) -> None:
    p1 = cluster.topology.pods[0]
    pod = dc_replace(p1, redis_url="", shard_url=probe.url, backend="sql") if probe.sql else p1
    register_topology(zk, Topology(cluster.topology.zookeeper, [pod]))
    TopologyStore(zk).assign_many({"shop-a": "p1"})
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"name": "a", "tenant": "shop-a", "token": TOKEN}]}))
    args = ["--zk", cluster.topology.zookeeper + zk.root, "--tokens", str(tokens),
            "--app", "tests.apps.api_app", "--max-wait", "5", "--log-level", "warning"]
    with api_server(args, tmp_path / "api.log") as (_, url), \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"},
                         timeout=30) as c:
        # no worker yet: a queued job waits on its queue, and DELETE takes it off
        r = c.post("/v1/tenants/shop-a/jobs", json={"job": "api.add", "args": [1, 1]})
        assert r.status_code == 202, r.text
        assert r.json()["state"] == "queued" and r.headers["location"] == r.json()["monitor"]
        assert probe.ready() == 1
        got = c.get(r.headers["location"])
        assert got.status_code == 200 and got.json()["state"] == "queued"
        assert got.json()["enqueued_at"] == r.json()["enqueued_at"]
        d = c.delete(r.headers["location"])
        assert d.status_code == 200, d.text
        assert d.json()["state"] == "cancelled" and d.json()["reason"] == "cancelled"
        assert probe.ready() == 0
        assert c.delete(r.headers["location"]).status_code == 200  # idempotent
        # a job due in an hour waits among the scheduled ones
        r = c.post("/v1/tenants/shop-a/jobs", json={"job": "api.add", "args": [1, 2], "delay": 3600})
        assert r.status_code == 202 and r.json()["run_at"] > r.json()["enqueued_at"]
        assert probe.counts()["scheduled"] == 1
        assert c.delete(r.headers["location"]).json()["state"] == "cancelled"
        assert probe.counts()["scheduled"] == 0
        assert c.get("/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV").status_code == 404
        w = PodWorker(zk, "p1", fast_config(queues=["default"], concurrency=4))
        w.start()
        try:
            # 202 -> poll -> 303 See Other to what the job created
            r = c.post("/v1/tenants/shop-a/jobs", json={"job": "api.create_thing", "args": ["x1"]})
            assert r.status_code == 202, r.text
            done = poll(c, r.headers["location"], lambda g: g.status_code != 200)
            assert done.status_code == 303 and done.headers["location"] == "/things/x1"
            doc = done.json()
            assert doc["state"] == "succeeded" and doc["attempts"] == 1 and doc["error"] is None
            assert doc["enqueued_at"] <= doc["started_at"] <= doc["finished_at"]
            # Prefer: wait answers 201 Created once the job is done (polling its record)
            r = c.post("/v1/tenants/shop-a/jobs", json={"job": "api.create_thing", "args": ["sync"]},
                       headers={"Prefer": "wait=5"})
            assert r.status_code == 201, r.text
            assert r.headers["location"] == "/things/sync" and r.json()["state"] == "succeeded"
            # a running job cannot be cancelled, nor a finished one
            r = c.post("/v1/tenants/shop-a/jobs", json={"job": "api.slow", "args": [1.0]})
            poll(c, r.headers["location"], lambda g: g.json()["state"] == "running")
            d = c.delete(r.headers["location"])
            assert d.status_code == 409 and d.json()["job"]["state"] == "running"
            poll(c, r.headers["location"], lambda g: g.json()["state"] == "succeeded")
            assert c.delete(r.headers["location"]).status_code == 409
            # a failed job answers 200 with its error
            r = c.post("/v1/tenants/shop-a/jobs", json={"job": "api.fail", "args": ["nope"]})
            doc = poll(c, r.headers["location"], lambda g: g.json()["state"] == "failed").json()
            assert doc["error"]["message"] == "nope" and doc["reason"] == "retries_exhausted"
        finally:
            w.stop()
