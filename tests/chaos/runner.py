"""The scenario runner's output: one row per scenario run, the table, the JSON file.

`tests/chaos/test_chaos.py` runs the scenarios (pytest: fixtures, servers, xfail) and
calls `record()`, which puts the row on the test's report (its user_properties, so it
reaches the controller under pytest-xdist); `pytest_runtest_logreport` gathers the rows and
`pytest_terminal_summary` (both imported by tests/conftest.py) prints the table at the end
of the session and writes `tests/chaos/results/chaos-<mode>-<time>.json` (once: in the
process that reports, never in an xdist worker).
`python -m tests.chaos.runner` is `make chaos`: the full set (PODJOBS_CHAOS=full).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from podjobs.table import render
from tests.chaos.checker import Report

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROWS: list[dict[str, Any]] = []
COLUMNS = ["scenario", "fault", "ack", "lost", "twice", "overlap", "amo twice", "stranded",
           "held", "wrong pod", "unexpected", "zombie", "poison bad", "effect x2", "exits (s)",
           "time (s)", "verdict"]


ROW_KEY = "chaos_row"


def record(item: Any, name: str, fault: str, report: Report | None, seconds: float, mode: str,
           xfail: str | None, error: str | None = None) -> None:
    """One row, on `item`'s (the test's) report: `pytest_runtest_logreport` adds it to ROWS."""
    row: dict[str, Any] = {"scenario": name, "fault": fault, "mode": mode,
                           "seconds": round(seconds, 1), "xfail": xfail}
    if report is not None:
        row.update(report.as_dict())
    else:
        row.update(verdict="ERROR", failures=[error or "?"])
    item.user_properties.append((ROW_KEY, row))


def pytest_runtest_logreport(report: Any) -> None:
    """The rows of the call phase's reports: in this process, or from xdist's workers."""
    if report.when == "call":
        ROWS.extend(v for k, v in report.user_properties if k == ROW_KEY)


def _verdict(row: dict[str, Any]) -> str:
    v = str(row["verdict"])
    if row.get("xfail"):
        item = str(row["xfail"]).split(",")[0].replace("issue 11 ", "")
        return f"{v} (xfail {item})"
    return v


def table(rows: list[dict[str, Any]]) -> str:
    def cell(row: dict[str, Any], k: str) -> Any:
        return row.get(k, "-")

    body = [[r["scenario"], r["fault"], cell(r, "acknowledged"), cell(r, "lost"),
             cell(r, "twice"), cell(r, "overlapping"), cell(r, "amo_twice"),
             cell(r, "stranded"), cell(r, "held"), cell(r, "misplaced"), cell(r, "unexpected"), cell(r, "zombie_reruns"),
             cell(r, "poison_bad") if r.get("poison") else "-",
             r.get("effect_twice", 0) + r.get("effect_missing", 0)
             if r.get("effect_twice") or r.get("effect_missing") else "-",
             " ".join(f"{t:.1f}" for t in r.get("exit_times", [])) or "-",
             r["seconds"], _verdict(r)] for r in rows]
    return render(COLUMNS, body)


def write_json(rows: list[dict[str, Any]], mode: str) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"chaos-{mode}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"mode": mode, "rows": rows}, indent=1))
    return path


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not ROWS or hasattr(config, "workerinput"):  # an xdist worker: the controller reports
        return
    mode = ROWS[0]["mode"]
    terminalreporter.section(f"chaos scenarios ({mode})")
    for line in table(ROWS).splitlines():
        terminalreporter.write_line(line)
    for r in ROWS:
        if r.get("failures"):
            terminalreporter.write_line(f"{r['scenario']}: {'; '.join(r['failures'])}"
                                        + (f"  e.g. {r['examples']}" if r.get("examples") else ""))
    terminalreporter.write_line(f"written: {write_json(ROWS, mode)}")


def main() -> int:
    import pytest

    os.environ.setdefault("PODJOBS_CHAOS", "full")
    here = Path(__file__).resolve().parent
    return int(pytest.main(["-q", str(here), str(here.parent / "test_chaos_checker.py"),
                            *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
