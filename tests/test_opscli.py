"""The operator commands through the real CLI entry point, on a real Redis."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import redis

import podjobs
from podjobs import keys
from podjobs.cli import main
from tests.helpers import wait_until, worker


@podjobs.job(name="ops.fail", retries=0)
def fail(x: int) -> None:
    raise ValueError(f"bad input {x}")


release = threading.Event()


@podjobs.job(name="ops.slow")
def slow(seconds: float) -> None:
    """Runs until the test releases it (at most `seconds`): it is inspected meanwhile."""
    release.wait(seconds)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main(list(argv)) == 0
    out = capsys.readouterr().out
    return json.loads(out) if "--json" in argv else out


def test_queues_workers_dead_scheduled_and_job_show(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    podjobs.configure(redis_url)
    r = redis.Redis.from_url(redis_url)
    dead = fail.enqueue(1)
    later = slow.enqueue_in(600, 0.0)
    release.clear()
    with worker(redis_url) as w:
        wait_until(lambda: r.zcard(keys.DEAD) == 1, what="the failing job to die")
        running = slow.enqueue(30.0)

        def reported() -> bool:
            w.heartbeat.beat()  # publish what it runs now rather than at the next beat
            listed = run(capsys, "workers", "--redis", redis_url, "--json")
            return any(b["job_id"] == running.id for wk in listed for b in wk["busy"])

        wait_until(reported, timeout=10, what="the worker to report its running job")
        shown = run(capsys, "job", "show", running.id, "--redis", redis_url, "--json")
        assert shown["where"] == "in_flight" and shown["worker"] == w.id
        queued = run(capsys, "queues", "--redis", redis_url, "--json")
        assert {q["queue"]: q["in_flight"] for q in queued}["default"] == 1
        release.set()
        wait_until(lambda: not any(r.hlen(k) for k in r.scan_iter(match=keys.inflight("*", "*"))),
                   what="the released job to finish")
    queues = run(capsys, "queues", "--redis", redis_url, "--json")
    assert queues[0]["queue"] == "default" and queues[0]["scheduled"] == 1
    text = run(capsys, "queues", "--redis", redis_url)
    assert "latency" in text and "default" in text
    (d,) = run(capsys, "dead", "list", "--redis", redis_url, "--json")
    assert d["job_id"] == dead.id and d["reason"] == "retries_exhausted" and d["where"] == "dead"
    assert d["error"]["message"] == "bad input 1" and d["at"].endswith("Z")
    assert "bad input 1" in run(capsys, "dead", "list", "--redis", redis_url)
    (s,) = run(capsys, "scheduled", "list", "--redis", redis_url, "--json")
    assert s["job_id"] == later.id
    assert run(capsys, "job", "show", later.id, "--redis", redis_url, "--json")["where"] == "scheduled"
    assert run(capsys, "job", "show", dead.id, "--redis", redis_url, "--json")["where"] == "dead"
    assert "1 dead job(s) put back" in run(capsys, "dead", "retry", dead.id, "--redis", redis_url)
    assert run(capsys, "job", "show", dead.id, "--redis", redis_url, "--json")["where"] == "queue"
    r.lpush(keys.queue("default"), b"junk")
    with worker(redis_url):
        wait_until(lambda: r.zcard(keys.DEAD) == 2, what="both to die")
    assert main(["dead", "delete", "--all", "--redis", redis_url]) == 2  # not confirmed
    assert "pass --yes" in capsys.readouterr().err
    assert "2 dead job(s) deleted" in run(capsys, "dead", "delete", "--all", "--yes", "--redis",
                                          redis_url)
    (stats,) = run(capsys, "stats", "--redis", redis_url, "--json")
    assert stats["dead"] == 3 and stats["processed"] >= 1


def test_errors_are_one_line_with_what_to_do(redis_url: str, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODJOBS_REDIS_URL", raising=False)
    monkeypatch.delenv("PODJOBS_ZK", raising=False)
    assert main(["queues"]) == 2
    assert "pass --pod NAME or --redis URL" in capsys.readouterr().err
    assert main(["job", "show", "01ABCDEFGHJKMNPQRSTVWXYZ00", "--redis", redis_url]) == 1
    assert "is not queued, scheduled, retrying, running or dead" in capsys.readouterr().err
    assert main(["dead", "retry", "--redis", redis_url]) == 2
    assert "needs job ids or --all" in capsys.readouterr().err


@podjobs.job(name="ops.mark_critical", queue="critical")
def mark_critical(url: str, tag: str) -> None:
    redis.Redis.from_url(url).rpush("ops:marks", tag)


@podjobs.job(name="ops.mark_default")
def mark_default(url: str, tag: str) -> None:
    redis.Redis.from_url(url).rpush("ops:marks", tag)


def test_a_paused_queue_is_passed_over_and_its_jobs_wait_until_resumed(
        redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    podjobs.configure(redis_url)
    r = redis.Redis.from_url(redis_url)
    out = run(capsys, "queues", "pause", "critical", "--redis", redis_url, "--json")
    assert out["action"] == "queues pause" and out["count"] == 1
    mark_critical.enqueue(redis_url, "first")  # first in the worker's priority, but paused
    mark_default.enqueue(redis_url, "second")
    with worker(redis_url, queues=["critical", "default"]):
        wait_until(lambda: r.lrange("ops:marks", 0, -1) == [b"second"], what="the default job")
        # strict priority: a critical job the worker could take would have run before it
        (crit,) = [q for q in run(capsys, "queues", "--redis", redis_url, "--json")
                   if q["queue"] == "critical"]
        assert crit["size"] == 1 and crit["paused"] is True
        assert "PAUSED" in run(capsys, "queues", "--redis", redis_url)
        run(capsys, "queues", "resume", "critical", "--redis", redis_url)
        wait_until(lambda: r.lrange("ops:marks", 0, -1) == [b"second", b"first"],
                   what="the critical job once resumed")
        # a job scheduled an hour ahead runs when an operator says so
        later = mark_default.enqueue_in(3600, redis_url, "later")
        out = run(capsys, "scheduled", "run-now", later.id, "--redis", redis_url, "--json")
        assert out["changed"] == [later.id]
        wait_until(lambda: r.lrange("ops:marks", -1, -1) == [b"later"], what="the job run now")


def test_watch_refreshes_until_its_rounds_are_done(redis_url: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    tag = podjobs.job(name="ops.watched")(lambda: None)
    podjobs.configure(redis_url)
    tag.enqueue()
    assert main(["queues", "--redis", redis_url, "--watch", "0.01", "--rounds", "3",
                 "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(json.loads(x)[0]["size"] == 1 for x in lines)  # JSON Lines
    assert main(["queues", "--redis", redis_url, "--watch", "0.01", "--rounds", "2"]) == 0
    assert capsys.readouterr().out.count("(Ctrl-C to stop)") == 2
