"""`make demo` end to end: `python -m demo.run` starts its own cluster and workers,
runs the single-pod workload and the tenants-on-3-pods section, tears everything
down and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_demo_runs_end_to_end() -> None:
    proc = subprocess.run([sys.executable, "-m", "demo.run"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "demo OK" in out, out
    # the retried webhook: failed twice, then succeeded
    assert "webhook endpoint returned 503 (attempt 2)" in out, out
    assert "flaky_webhook(7) succeeded on attempt 3" in out, out
    # the dead job, with its reason and error
    assert "broken_export(13)" in out, out
    assert "retries_exhausted" in out, out
    assert "bucket 's3://exports' does not exist" in out, out

    # tenants on 3 pods: the unknown tenant is refused before anything is written
    assert ("-> UnknownTenant: tenant 'shop-99' is not in the directory (pods: p1, p2, p3); "
            "assign it with 'podjobs tenants assign shop-99 POD'") in out, out
    assert "nothing written: jobs queued on p1, p2, p3 still 0, 0, 0" in out, out
    assert "queued by pod: p1 22, p2 26, p3 30" in out, out
    # `podjobs tenants list` and `podjobs fleet` ran while the workers did
    assert re.search(r"^shop-12\s+p3\s+active$", out, re.M), out
    for pod in ("p1", "p2", "p3"):
        assert re.search(rf"^{pod}\s+\S+:\d+:\S+\s+\S+\s+\d+\s+critical,default,low\s+4\s", out,
                         re.M), out
    # which pod ran what: each pod's shard holds exactly its tenants' orders, none misplaced,
    # all written by the worker started for that pod
    started = dict(re.findall(r"(p\d) pid (\d+)", out))
    assert sorted(started) == ["p1", "p2", "p3"], out
    tenants = {"p1": (1, 4, 7, 10), "p2": (2, 5, 8, 11), "p3": (3, 6, 9, 12)}
    for pod, shops in tenants.items():
        cells = re.escape(", ".join(f"shop-{n} ({n})" for n in shops))
        row = rf"^{pod}\s+podjobs_{pod}\s+{started[pod]}\s+{cells}\s+{sum(shops)}\s+0$"
        assert re.search(row, out, re.M), (row, out)
    assert "no row for shop-99 anywhere" in out, out
