"""`make demo` end to end: `python -m demo.run` starts its own cluster and workers,
runs the workload, tears everything down and exits 0."""

from __future__ import annotations

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
