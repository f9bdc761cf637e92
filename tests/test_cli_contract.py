"""The command-line contract on real servers: every command with `--json` prints JSON that
follows its noun's schema (surface/schema.py), with the documented exit code.

`STEPS` runs each command the parser has (in an order where each finds what it needs:
a dead job, a scheduled one, an iteration job, a tenant, a registered worker); a command
added without a step here fails `test_every_command_has_a_step`. The long-running servers
(`worker`, `scheduler`, `api` serving) and `dev up` (it starts servers; tests/test_infra.py
runs it) are the only ones left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import redis

import podjobs
from podjobs import keys
from podjobs.cli import build_parser, main
from podjobs.fairshare import ready_jobs
from podjobs.infra.topofile import Topology
from podjobs.pods.registration import WorkerRegistration
from podjobs.pods.topology import TopologyStore, register_topology
from podjobs.pods.zk import ZK
from podjobs.surface.schema import check
from tests.helpers import REPO, wait_until, worker

MIGRATIONS = str(REPO / "tests" / "apps" / "migrations")
#: commands that run until stopped, or start servers, with why they print no JSON here
EXEMPT = {"worker": "a worker process (logs)", "scheduler": "a scheduler process (logs)",
          "exporter": "a metrics server (tests/test_observe.py)",
          "web": "the dashboard's server (tests/test_web_browser.py)",
          "worker check": "an exec probe (tests/test_health.py)",
          "scheduler check": "an exec probe (tests/test_health.py)",
          "dev up": "starts servers (tests/test_infra.py)"}


@podjobs.job(name="contract.again", retries=3, backoff=podjobs.constant(600))
def again() -> None:
    raise RuntimeError("not yet")


@podjobs.job(name="contract.fail", retries=0)
def fail(x: int) -> None:
    raise ValueError(f"bad input {x}\nsecond line")


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[str, str | None]:
    """'path' -> noun for every command of the parser (groups left out)."""
    out: dict[str, str | None] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = (*prefix, name)
                if "noun" in sub._defaults:
                    out[" ".join(path)] = sub._defaults["noun"]
                out.update(commands(sub, path))
    return out


def steps(ctx: dict[str, str]) -> list[tuple[str, list[str], int]]:
    """(command path, its arguments, expected exit code), in the order they run."""
    zk, d, it = ["--zk", ctx["zk"]], ctx["dead"], ctx["iteration"]
    p1 = ["--pod", "p1", *zk]
    return [
        ("dev status", ["--dir", ctx["dir"]], 1),  # no cluster recorded there: 1
        ("dev down", ["--dir", ctx["dir"]], 0),
        ("queues", ["pause", "low", *zk], 0), ("queues", zk, 0), ("queues", ["resume", "low", *zk], 0),
        ("workers", zk, 0), ("stats", zk, 0),
        ("job", ["show", d, *zk], 0),
        ("dead", ["list", *zk], 0), ("scheduled", ["list", *zk], 0), ("retries", ["list", *zk], 0),
        ("dead", ["retry", d, *zk], 0), ("dead", ["delete", "--all", "--yes", *zk], 0),
        ("scheduled", ["run-now", ctx["scheduled"], *zk], 0),
        ("retries", ["retry-now", ctx["retry"], *zk], 0),
        ("retries", ["delete", ctx["retry"], *zk], 1),  # retried now: no longer waiting
        ("iterations list", zk, 0), ("iterations show", [it, *zk], 0),  # every pod: found on p1
        ("iterations pause", [it, *p1], 0), ("iterations resume", [it, *p1], 0),
        ("iterations cancel", [it, *zk], 0),
        ("pods list", zk, 0),
        ("pods add", ["p9", "--redis", "redis://:${env:P9_REDIS_PASSWORD}@127.0.0.1:1/0",
                      "--shard", "mysql+pymysql://u:secret@127.0.0.1:1/x", "--plain-password",
                      *zk], 0),
        ("pods set-state", ["p9", "draining", *zk], 0),
        ("fleet", zk, 0),
        ("tenants assign", ["shop-2", "p1", *zk], 0), ("tenants where", ["shop-1", *zk], 0),
        ("tenants list", zk, 0), ("tenants move", ["--status", *zk], 0),
        ("tenants quota", ["shop-1", "--rate", "50", "--pending", "1000", *zk], 0),
        ("tenants quota", ["--pod", "p1", "--pending", "5000", *zk], 0),
        ("tenants top", zk, 0),
        ("tenants migrate-directory", zk, 0),
        ("scheduler status", zk, 0),
        ("migrations status", zk, 0),
        ("migrations wait", ["--timeout", "0.2", "--interval", "0.1", *zk], 3),
        ("migrations cancel", ["0001", *zk], 0), ("migrations retry", ["0001", *zk], 0),
        ("migrations skip", ["0001", "--pod", "p1", "--migrations", MIGRATIONS, *zk], 0),
        ("api", ["token", "--tenant", "shop-1", *zk], 0),
        ("relay", ["--once", *p1], 0),
    ]


def test_every_command_has_a_step() -> None:
    have = {path for path, _, _ in steps({"zk": "", "dir": "", "dead": "", "iteration": "",
                                          "scheduled": "", "retry": ""})}
    nouns = commands(build_parser())
    assert {p for p, n in nouns.items() if n is None} == set(EXEMPT) - {"dev up"}
    assert set(nouns) - set(EXEMPT) == have, "add a step for each new command"


def test_every_command_prints_json_that_follows_its_schema(
        pods: Topology, zk: ZK, cluster: Any, zk_root: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tests.apps.iter_app import Count

    register_topology(zk, pods)
    TopologyStore(zk).assign("shop-1", "p1")
    p1, p2 = pods.pods[0].redis_url, pods.pods[1].redis_url
    podjobs.configure(p1)
    dead = fail.enqueue(1)
    retry = again.enqueue()
    r = redis.Redis.from_url(p1)
    with worker(p1, queues=["default"]):
        wait_until(lambda: r.zcard(keys.DEAD) == 1 and r.zcard(keys.retry("default")) == 1,
                   what="the failing job to die and the other to wait for its retry")
    it = Count.enqueue(tag="contract", n=3)  # registered and queued; no worker runs it
    podjobs.configure(p2)
    sched = fail.enqueue_in(600, 2)
    reg = WorkerRegistration(zk, "p2", "w-contract", {"queues": ["default"], "concurrency": 2,
                                                      "started": 1.0e9}).start()
    ctx = {"zk": cluster.topology.zookeeper + zk_root, "dir": str(tmp_path / "none"),
           "dead": dead.id, "iteration": it.id, "scheduled": sched.id, "retry": retry.id}
    nouns = commands(build_parser())
    seen: dict[str, Any] = {}
    try:
        for path, argv, code in steps(ctx):
            capsys.readouterr()
            rc = main([*path.split(), *argv, "--json"])
            out, err = capsys.readouterr()
            assert rc == code, f"{path} {argv}: exit {rc}, not {code}: {err}"
            assert "Traceback" not in err, err
            if rc == 1 and not out:  # an expected failure: one line on stderr, no JSON
                assert err.count("\n") == 1, err
                continue
            doc = json.loads(out)
            noun = "action" if isinstance(doc, dict) and "action" in doc else nouns[path]
            assert noun is not None
            assert check(noun, doc) == [], (path, doc)
            seen[path + " " + " ".join(argv[:1])] = doc
        # a pod that stores a plain password (p9's shard URL, forced) is named on stderr
        capsys.readouterr()
        assert main(["pods", "list", "--zk", ctx["zk"]]) == 0
        err = capsys.readouterr().err
        assert "pod p9 stores a plain password in ZooKeeper (--shard)" in err and "secret" not in err
        assert "pod p1 " not in err
    finally:
        reg.stop()
    # spot checks of the contents, beyond the shapes
    (job,) = seen["dead list"]
    assert job["job_id"] == dead.id and job["pod"] == "p1" and job["reason"] == "retries_exhausted"
    assert {q["pod"] for q in seen["queues --zk"]} >= {"p1", "p2"}
    assert seen["queues pause"]["changed"] == ["p1", "p2", "p3"]
    assert [s["pod"] for s in seen["stats --zk"]] == ["p1", "p2", "p3"]
    (listed,) = seen["scheduled list"]
    assert listed["pod"] == "p2" and listed["at"].endswith("Z") and listed["job_id"] == sched.id
    assert seen["scheduled run-now"]["changed"] == [sched.id]
    assert seen["retries retry-now"]["changed"] == [retry.id]
    assert ready_jobs(r, "default")[-1] is not None  # taken next
    assert seen["job show"]["where"] == "dead" and seen["job show"]["pod"] == "p1"
    assert [p["pod"] for p in seen["pods list --zk"]] == ["p1", "p2", "p3"]  # before p9
    added = seen["pods add p9"]["pod"]
    assert "secret" not in json.dumps(added) and added["redis_url"] == "redis://:***@127.0.0.1:1/0"
    assert added["shard_url"] == "mysql+pymysql://u:***@127.0.0.1:1/x"
    assert [(w["pod"], w["worker"]) for w in seen["fleet --zk"]] == [("p2", "w-contract")]
    assert seen["migrations wait --timeout"]["outcome"] == "timeout"
    assert seen["migrations skip 0001"]["halted"] is False


@pytest.mark.parametrize(("argv", "code", "says"), [
    (["queues", "--bogus"], 2, "unrecognized arguments"),
    (["fleet", "--pod", "p9"], 2, "pod 'p9' is not in the topology"),
    (["dead", "delete", "--all"], 2, "pass --yes"),
    (["job", "show", "01ABCDEFGHJKMNPQRSTVWXYZ00"], 1, "has no status record"),
    (["api", "token", "--tenant", "shop-99"], 1, "shop-99"),
    (["pods", "add", "p8", "--redis", "redis://:pw@h:1/0", "--shard", "sqlite:///x"], 2,
     "would be stored in ZooKeeper in plain text"),
])
def test_errors_exit_with_their_code_on_one_line(
        pods: Topology, zk: ZK, cluster: Any, zk_root: str, argv: list[str], code: int, says: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    register_topology(zk, pods)
    try:
        rc = main([*argv, "--zk", cluster.topology.zookeeper + zk_root])
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert rc == code, err
    assert says in err and "Traceback" not in err
    assert err.count("\n") == 1 or "usage:" in err


def test_a_backend_connects_through_a_reference_and_keeps_it(redis_url: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from podjobs.backend import RedisBackend

    host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
    monkeypatch.setenv("PJ_T_HOST", host_port)
    b = RedisBackend("redis://${env:PJ_T_HOST}/0")
    assert b.redis.ping() and b.url == "redis://${env:PJ_T_HOST}/0"
