"""Seeing the fleet (issue 14 items 1 and 4), on real servers: a worker's /metrics and
/healthz, process isolation's children counted by their parent, the pods' gauges, the
job log lines and JSON logs."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

import podjobs
from podjobs import keys, logs
from podjobs.backend import RedisBackend
from podjobs.podmetrics import PodCollector
from tests.apps import api_app
from tests.helpers import wait_until, worker


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    podjobs.configure(redis_url)
    return redis.Redis.from_url(redis_url)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on the port's /metrics: (name, sorted labels) -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_worker_metrics_count_every_outcome(r: redis.Redis, redis_url: str, isolation: str) -> None:
    """succeeded, dead (retries=0) and dead by reason, duration and wait histograms; with
    process isolation the parent counts its children's jobs."""
    for i in range(3):
        api_app.add.enqueue(i, 1)
    api_app.fail.enqueue("boom")
    with worker(redis_url, isolation=isolation, app_modules=["tests.apps.api_app"], concurrency=2,
                metrics_port=0) as w:
        assert w.metrics_port
        wait_until(lambda: sample(scrape(w.metrics_port), "podjobs_jobs_total", pod="",
                                  queue="default", job="api.fail", outcome="dead") == 1
                   and sample(scrape(w.metrics_port), "podjobs_jobs_total", pod="", queue="default",
                              job="api.add", outcome="succeeded") == 3,
                   timeout=30, what="the outcomes counted")
        got = scrape(w.metrics_port)
        health = urllib.request.urlopen(f"http://127.0.0.1:{w.metrics_port}/healthz", timeout=5)
        assert health.status == 200 and b"ok" in health.read()
    add = {"pod": "", "queue": "default", "job": "api.add"}
    assert sample(got, "podjobs_jobs_dead_total", pod="", queue="default", job="api.fail",
                  reason="retries_exhausted") == 1
    assert sample(got, "podjobs_job_duration_seconds_count", **add) == 3
    assert sample(got, "podjobs_job_duration_seconds_bucket", le="+Inf", **add) == 3
    assert sample(got, "podjobs_job_wait_seconds_count", **add) == 3
    assert sample(got, "podjobs_worker_concurrency", pod="") == 2


def test_healthz_says_503_while_heartbeats_fail(r: redis.Redis, redis_url: str) -> None:
    with worker(redis_url, metrics_port=0) as w:
        w.heartbeat.stop()
        w.heartbeat.last_ok -= 10 * w.config.heartbeat_ttl  # as if Redis had not answered
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{w.metrics_port}/healthz", timeout=5)
        assert err.value.code == 503 and b"no heartbeat" in err.value.read()


def test_pod_gauges_read_each_pod_once(r: redis.Redis, redis_url: str) -> None:
    """Queue size, scheduled, dead and live workers of a pod; a pod whose Redis does not
    answer is down and the others still report."""
    for _ in range(4):
        api_app.noop.enqueue()
    api_app.noop.enqueue_in(3600)
    reg = CollectorRegistry()
    gone = RedisBackend("redis://127.0.0.1:1/0", check=False, socket_timeout=0.5, connect_timeout=0.5)
    reg.register(PodCollector(lambda: {"p1": RedisBackend(redis_url), "gone": gone}))
    from prometheus_client import generate_latest

    fams = {s.name: s for s in text_string_to_metric_families(generate_latest(reg).decode())}
    vals = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert vals[("podjobs_pod_up", (("pod", "p1"),))] == 1
    assert vals[("podjobs_pod_up", (("pod", "gone"),))] == 0
    assert vals[("podjobs_queue_size", (("pod", "p1"), ("queue", "default")))] == 4
    assert vals[("podjobs_scheduled_jobs", (("pod", "p1"), ("queue", "default")))] == 1
    assert vals[("podjobs_queue_latency_seconds", (("pod", "p1"), ("queue", "default")))] >= 0
    assert vals[("podjobs_workers", (("pod", "p1"),))] == 0


def test_job_log_lines_in_json(r: redis.Redis, redis_url: str) -> None:
    """One line when a job starts and one when it ends, with the job's fields; JSON lines
    parse and keep them; --job-log off leaves them out."""
    stream = io.StringIO()
    logs.setup("info", "json")
    root = logging.getLogger()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        api_app.add.enqueue(2, 3)
        api_app.fail.enqueue("no")
        with worker(redis_url, app_modules=["tests.apps.api_app"]):
            wait_until(lambda: r.zcard(keys.DEAD) == 1 and r.get(keys.stat("processed")) == b"1",
                       what="both settled")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        jobs = [x for x in lines if x["logger"] == "podjobs.jobs"]
        done = {x["job"]: x for x in jobs if x["msg"].startswith("done")}
        assert {x["job"] for x in jobs if x["msg"].startswith("start")} == {"api.add", "api.fail"}
        assert done["api.add"]["outcome"] == "succeeded" and done["api.add"]["attempt"] == 1
        assert done["api.fail"]["outcome"] == "dead" and done["api.fail"]["reason"] == "retries_exhausted"
        assert isinstance(done["api.add"]["duration_ms"], float) and done["api.add"]["ts"].endswith("Z")
        stream.truncate(0)
        stream.seek(0)
        logs.setup("info", "json", job_log=False)
        logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
        api_app.add.enqueue(1, 1)
        with worker(redis_url, app_modules=["tests.apps.api_app"]):
            wait_until(lambda: r.get(keys.stat("processed")) == b"2", what="the third job")
        assert not [line for line in stream.getvalue().splitlines()
                    if json.loads(line)["logger"] == "podjobs.jobs"]
    finally:
        logging.getLogger("podjobs.jobs").setLevel(logging.NOTSET)
        for h in list(root.handlers):
            root.removeHandler(h)


def test_iteration_gauges_show_progress(r: redis.Redis, redis_url: str) -> None:
    """A paused iteration job shows its items done and total; states are counted."""
    from prometheus_client import generate_latest

    from podjobs.iteration.admin import Iterations
    from podjobs.iteration.metrics import IterationCollector

    h = api_app.Steps.enqueue(n=5)
    b = RedisBackend(redis_url)
    Iterations(b).pause(h.id)  # parked when a worker takes it: progress 0 of 5 known later
    with worker(redis_url, app_modules=["tests.apps.api_app"]):
        wait_until(lambda: (p := Iterations(b).get(h.id)) is not None and p.state.value == "paused",
                   what="paused")
    reg = CollectorRegistry()
    reg.register(IterationCollector(lambda: {"p1": b}))
    vals = {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(generate_latest(reg).decode()) for s in f.samples}
    assert vals[("podjobs_iteration_jobs", (("pod", "p1"), ("state", "paused")))] == 1
    assert vals[("podjobs_iteration_items_done", (("id", h.id), ("job", "api.steps"), ("pod", "p1")))] == 0


def test_top_tenants_are_opt_in(r: redis.Redis, redis_url: str) -> None:
    """No tenant label by default; --metrics-top-tenants N exports the N busiest only."""
    for tenant, n in (("big", 3), ("mid", 2), ("small", 1)):
        for i in range(n):
            api_app.add.enqueue(i, 0, tenant=tenant)
    with worker(redis_url, app_modules=["tests.apps.api_app"], metrics_port=0,
                metrics_top_tenants=2) as w:
        wait_until(lambda: r.get(keys.stat("processed")) == b"6", what="six jobs")
        got = scrape(w.metrics_port)
    tenants = {dict(k[1])["tenant"]: v for k, v in got.items() if k[0] == "podjobs_tenant_jobs_total"}
    assert tenants == {"big": 3, "mid": 2}
    with worker(redis_url, app_modules=["tests.apps.api_app"], metrics_port=0) as w:
        assert not [k for k in scrape(w.metrics_port) if "tenant" in dict(k[1])]


def test_exporter_process_serves_pod_gauges(r: redis.Redis, redis_url: str) -> None:
    """`podjobs exporter --redis URL`: a process of its own serving the pod's gauges."""
    import subprocess
    import sys

    from podjobs.infra.ports import free_port
    from tests.helpers import REPO, stop_proc

    api_app.noop.enqueue()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "podjobs.cli", "exporter", "--redis", redis_url,
                             "--pod-name", "p1", "--metrics-port", str(port), "--log-level",
                             "warning"], cwd=REPO, stdout=subprocess.DEVNULL)
    try:
        def scraped() -> dict[Any, float]:
            try:
                return scrape(port)
            except OSError:
                return {}

        got = wait_until(lambda: scraped() or None, timeout=30, what="the exporter's /metrics")
        assert sample(got, "podjobs_pod_up", pod="p1") == 1
        assert sample(got, "podjobs_queue_size", pod="p1", queue="default") == 1
    finally:
        assert stop_proc(proc) == 0
