"""The chaos scenarios as tests. Plain pytest (`make test`) runs the quick subset, one run
of each fault class; PODJOBS_CHAOS=full (`make chaos`) runs every scenario with more jobs.
A scenario the current code fails is a strict xfail naming its item of issue 11."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from podjobs.infra.topofile import Topology
from podjobs.pods.zk import ZK
from tests.chaos import runner
from tests.chaos.checker import check
from tests.chaos.cluster_scenarios import ClusterCtx
from tests.chaos.registry import SPECS, Spec
from tests.chaos.scenarios import Size

FULL = os.environ.get("PODJOBS_CHAOS", "").strip().lower() == "full"
MODE = "full" if FULL else "quick"


@pytest.fixture
def chaos_cluster(cluster: Any, pods: Topology, zk: ZK, zk_root: str) -> ClusterCtx:
    local = getattr(cluster, "cluster", None)  # LocalServers; None with containers
    zk_pid = None
    if local is not None:
        zk_pid = next((s.pid for s in local.servers() if s.kind == "zookeeper"), None)
    return ClusterCtx(topology=pods, zk=zk, zk_root=zk_root, zk_pid=zk_pid)


def _param(spec: Spec) -> Any:
    marks = [pytest.mark.xfail(strict=spec.strict, reason=spec.xfail)] if spec.xfail else []
    return pytest.param(spec, id=spec.name, marks=marks)


@pytest.mark.parametrize("spec", [_param(s) for s in SPECS if FULL or s.quick])
def test_chaos(spec: Spec, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    size = Size.full() if FULL else Size.quick()
    t0 = time.monotonic()
    try:
        if spec.cluster:
            cx = request.getfixturevalue("chaos_cluster")
            if spec.name == "zk_frozen" and cx.zk_pid is None:
                pytest.skip("needs the local ZooKeeper process (PODJOBS_TEST_SERVERS=local)")
            obs = spec.fn(tmp_path, size, cx)
        else:
            obs = spec.fn(tmp_path, size)
    except Exception as exc:
        runner.record(request.node, spec.name, spec.fault, None, time.monotonic() - t0, MODE,
                      spec.xfail, error=f"{type(exc).__name__}: {exc}")
        raise
    report = check(obs)
    runner.record(request.node, spec.name, spec.fault, report, time.monotonic() - t0, MODE,
                  spec.xfail)
    assert report.verdict == "PASS", f"{report.failures}; examples {report.examples}"
