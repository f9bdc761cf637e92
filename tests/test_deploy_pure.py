"""The deployment kit in deploy/ (no servers): every file parses, has the fields it needs,
and every podjobs command it runs (systemd ExecStart, Kubernetes command and exec probes,
docker-compose commands and health checks) is accepted by the real CLI parser with those
flags."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from podjobs.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PODS = ("p1", "p2", "p3")
#: flags a command line may carry before the parser has them (none now: --metrics-port,
#: of issue 14 item 1, has landed)
PENDING_FLAGS: set[str] = set()
#: the metrics issue 14 names; the Grafana dashboard graphs each
METRICS = ("podjobs_jobs_total", "podjobs_job_duration_seconds", "podjobs_job_wait_seconds",
           "podjobs_queue_size", "podjobs_queue_latency_seconds", "podjobs_workers")
SUBST = {"%i": "p1", "$(PODJOBS_APP)": "myapp.jobs", "${PODJOBS_APP}": "myapp.jobs",
         "${PODJOBS_API_TOKENS}": "/etc/podjobs/tokens.json"}


def _subst(arg: str) -> str:
    for k, v in SUBST.items():
        arg = arg.replace(k, v)
    assert "$" not in arg and "%" not in arg, f"unexpanded variable in {arg!r}"
    return arg


def _without_pending(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a.split("=")[0] in PENDING_FLAGS:
            skip = "=" not in a
        else:
            out.append(a)
    return out


def parse(argv: list[str]) -> Any:
    """The namespace of `podjobs ARGS` (argv[0] is the podjobs program), or a failure that
    names the command."""
    assert argv and Path(argv[0]).name == "podjobs", argv
    args = [_subst(a) for a in argv[1:]]
    parser = build_parser()
    for attempt in (args, _without_pending(args)):
        try:
            ns = parser.parse_args(attempt)
        except SystemExit:
            continue
        assert getattr(ns, "func", None) is not None, f"not a command: {argv}"
        return ns
    pytest.fail(f"the CLI refuses: {' '.join(argv)}")


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# -- systemd ------------------------------------------------------------------------------------


def unit(name: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    section = ""
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1)
            out[section] = {}
            continue
        k, _, v = line.partition("=")
        out[section][k] = v
    return out


@pytest.mark.parametrize("name", ["podjobs-worker@.service", "podjobs-scheduler.service",
                                  "podjobs-api.service"])
def test_systemd_units(name: str) -> None:
    u = unit(name)
    assert set(u) == {"Unit", "Service", "Install"}
    s = u["Service"]
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main" and int(s["WatchdogSec"]) > 0
    assert s["Restart"] == "always" and u["Install"]["WantedBy"] == "multi-user.target"
    assert s["EnvironmentFile"] == "/etc/podjobs/podjobs.env"
    argv = shlex.split(s["ExecStart"])
    ns = parse(argv)
    assert ns.command == {"podjobs-worker@.service": "worker", "podjobs-scheduler.service":
                          "scheduler", "podjobs-api.service": "api"}[name]
    if ns.command == "worker":
        assert flag(argv, "--pod") == "%i"      # one instance per pod
        assert int(s["TimeoutStopSec"]) > float(flag(argv, "--shutdown-timeout")) + 5
        assert s["KillSignal"] == "SIGTERM"


def test_systemd_environment_names_what_the_units_use() -> None:
    env = dict(line.split("=", 1) for line in (DEPLOY / "systemd" / "podjobs.env").read_text()
               .splitlines() if line and not line.startswith("#"))
    assert {"PODJOBS_ZK", "PODJOBS_APP", "PODJOBS_API_TOKENS", "PODJOBS_WEB_SECRET"} <= set(env)
    assert len(env["PODJOBS_WEB_SECRET"]) >= 16


# -- Kubernetes ----------------------------------------------------------------------------------


def k8s() -> list[dict[str, Any]]:
    docs = []
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(d), d
    return docs


def deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s() if d["kind"] == "Deployment"}


def container(d: dict[str, Any]) -> dict[str, Any]:
    spec = d["spec"]["template"]["spec"]
    assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    c: dict[str, Any] = spec["containers"][0]
    return c


@pytest.mark.parametrize("pod", PODS)
def test_a_worker_deployment_per_pod_outlives_its_shutdown_timeout(pod: str) -> None:
    d = deployments()[f"podjobs-worker-{pod}"]
    c = container(d)
    ns = parse(c["command"])
    assert ns.command == "worker" and ns.pod == pod
    grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(flag(c["command"], "--shutdown-timeout")) + 5
    probe = parse(c["livenessProbe"]["exec"]["command"])
    assert probe.func.__name__ == "cmd_worker_check" and probe.pod == pod
    ready = c["readinessProbe"]["httpGet"]               # the metrics port's probe
    assert (ready["path"], ready["port"]) == ("/healthz", "metrics")
    assert {"name": "metrics", "containerPort": int(flag(c["command"], "--metrics-port"))} in c["ports"]


def test_two_schedulers_with_an_exec_probe() -> None:
    d = deployments()["podjobs-scheduler"]
    assert d["spec"]["replicas"] == 2
    c = container(d)
    assert parse(c["command"]).command == "scheduler"
    assert parse(c["livenessProbe"]["exec"]["command"]).func.__name__ == "cmd_scheduler_check"


def _api_paths() -> set[str]:
    from podjobs.surface.api.app import create_app
    from podjobs.surface.api.auth import TokenStore
    from podjobs.surface.api.service import Service

    directory = SimpleNamespace(stale=False, pods=dict)
    app = create_app(Service(SimpleNamespace(directory=directory, resolve=lambda t: None)), TokenStore())
    return {getattr(r, "path", "") for r in app.routes}


def test_the_api_with_liveness_and_readiness_probes_it_serves() -> None:
    c = container(deployments()["podjobs-api"])
    ns = parse(c["command"])
    assert ns.command == "api" and ns.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == ns.port
    live, ready = c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"]
    assert (live["path"], ready["path"]) == ("/healthz", "/readyz")
    assert {live["port"], ready["port"]} <= set(ports)
    assert {"/healthz", "/readyz", "/docs", "/metrics"} <= _api_paths()


def test_the_service_monitor_scrapes_ports_the_services_have() -> None:
    docs = k8s()
    [sm] = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    want = sm["spec"]["selector"]["matchLabels"]
    services = [d for d in docs if d["kind"] == "Service"
                and want.items() <= d["metadata"]["labels"].items()]
    assert {s["metadata"]["name"] for s in services} >= {"podjobs-api", "podjobs-worker-metrics",
                                                         "podjobs-scheduler-metrics"}
    names = {p["name"] for s in services for p in s["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in names and ep["path"] == "/metrics"
    deps = deployments()
    for s in services:  # each Service selects a Deployment whose container has the port
        sel = s["spec"]["selector"].items()
        targets = [d for d in deps.values() if sel <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert targets, s["metadata"]["name"]
        for d in targets:
            have = {p["name"] for p in container(d)["ports"]}
            assert {p["targetPort"] for p in s["spec"]["ports"]} <= have


# -- docker ----------------------------------------------------------------------------------------


def test_dockerfile_copies_what_exists_and_runs_podjobs() -> None:
    lines = [ln for ln in (DEPLOY / "Dockerfile").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0].startswith("FROM python:3.11")
    root = DEPLOY.parent
    for ln in lines:
        if ln.startswith("COPY "):
            for src in ln.split()[1:-1]:
                assert (root / src).exists(), src
    assert 'ENTRYPOINT ["podjobs"]' in lines


def test_compose_cluster_commands_parse() -> None:
    doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"zookeeper", "redis-p1", "redis-p2", "mariadb", "init", "worker-p1", "worker-p2",
            "scheduler", "api"} <= set(services)
    for name, s in services.items():
        if s.get("image") != "podjobs:local":
            continue
        if name == "init":
            for cmd in s["command"][0].split("&&"):
                parse(shlex.split(cmd))
            continue
        ns = parse(["podjobs", *s["command"]])
        check = s["healthcheck"]["test"]
        if check[1] == "podjobs":
            parse(check[1:])
        if ns.command == "worker":
            assert float(s["stop_grace_period"].rstrip("s")) > ns.shutdown_timeout + 5
    assert services["scheduler"]["deploy"]["replicas"] == 2
    tokens = json.loads((DEPLOY / "compose-tokens.json").read_text())
    from podjobs.surface.api.auth import parse_tokens

    assert any(p.operator for p in parse_tokens(tokens).values())


# -- Grafana -----------------------------------------------------------------------------------------


def test_grafana_dashboard_graphs_every_metric_of_the_issue() -> None:
    d = json.loads((DEPLOY / "grafana" / "podjobs.json").read_text())
    assert d["title"] and d["uid"] and d["schemaVersion"] >= 36
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    exprs = " ".join(t["expr"] for p in d["panels"] for t in p["targets"])
    for m in METRICS:
        assert re.search(rf"\b{m}(_bucket)?\b", exprs), m
    for p in d["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["targets"]
    assert {v["name"] for v in d["templating"]["list"]} == {"datasource", "pod", "queue"}
    for p in d["panels"]:
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]


def test_the_parse_check_refuses_an_unknown_flag() -> None:
    with pytest.raises(pytest.fail.Exception, match="the CLI refuses"):
        parse(["podjobs", "worker", "--app", "x", "--no-such-flag"])
    with pytest.raises(pytest.fail.Exception):
        parse(["podjobs", "no-such-command"])
