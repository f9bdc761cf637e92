"""`make demo` end to end: `python -m demo.run` starts its own cluster and workers,
runs the single-pod workload, the tenants-on-3-pods section and the backfill that
survives a worker restart, the scheduler's migration rollout and the periodic
reconciliation, tears everything down and exits 0."""

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

    # a backfill that survives a worker restart: SIGTERM mid-way, the job checkpoints and goes
    # back to its queue with its cursor and the same attempt; a new worker resumes it to 100%
    assert "== a backfill that survives a worker restart (p1, tenant shop-1) ==" in out, out
    m = re.search(r"^  interrupted at cursor \[(\d+)\]: (\d+)/120 batches \(([\d,]+) rows\) "
                  r"checkpointed, state interrupted, last stop shutdown$", out, re.M)
    assert m, out
    cursor, batches = m.group(1), int(m.group(2))
    assert 0 < batches < 120 and int(m.group(3).replace(",", "")) == batches * 250, out
    assert (f"the shard agrees: {batches * 250:,} rows backfilled, all with id <= {cursor}; "
            "0 after the cursor") in out, out
    assert (f"back on queue low with cursor [{cursor}] and attempt 0: a resume, not a retry; "
            "attempts did not grow") in out, out
    # the progress lines (stdout is not a terminal here): the bar waits at the checkpoint while
    # no worker runs p1, then goes on from there to 100%
    assert re.search(rf"^  \[#+\.*\]\s+[\d.]+%\s+{batches * 250:,}/30,000 rows\s+{batches}/120 "
                     r"batches .* interrupted$", out, re.M), out
    assert re.search(r"^  \[#{24}\] 100\.0%  30,000/30,000 rows  120/120 batches .* succeeded$",
                     out, re.M), out
    runs = re.findall(r"^    (\d)\s+(\d+)\s+(\d)\s+(.+?)\s+(\[\d+\])$", out, re.M)
    assert [(n, a, start, end) for n, _, a, start, end in runs] == [
        ("1", "1", "the beginning", f"[{cursor}]"),
        ("2", "1", f"resumed from cursor [{cursor}]", "[32999]")], out
    assert runs[0][1] != runs[1][1], out  # two different worker processes
    assert re.search(r"^\s+runs: 2\n\s+interrupted: 1$", out, re.M), out
    assert re.search(r"^shop-1\s+30,000\s+30,000\s+0\s+0\s+30,000\s+0$", out, re.M), out
    assert re.search(r"^shop-4\s+3,000\s+0\s+3,000\s+3,000\s+0\s+0$", out, re.M), out
    assert ("verified: every one of shop-1's 30,000 rows backfilled exactly once "
            "(fingerprint = id * 2654435761 mod 2^32, backfilled = 1); shop-4's 3,000 rows "
            "untouched") in out, out
    # 5. migrations rolled out by the scheduler, canary first, while orders kept coming
    assert "== migrations as jobs: 2 new revisions, rolled out pod by pod ==" in out, out
    assert re.search(r"^leader: sched-a .*\nstanding by: sched-b$", out, re.M), out
    assert "  every shard completed 0002" in out, out
    for pod in ("p1", "p2", "p3"):
        assert re.search(rf"^{pod}\s+active\s+0002\s+-\s+-\s+-$", out, re.M), out
    timeline = re.findall(r"^\s+[\d.]+\s+[\d.]+\s+(p\d)\s+(000\d)\s+complete$", out, re.M)
    assert sorted(timeline) == [(p, r) for p in ("p1", "p2", "p3") for r in ("0001", "0002")], out
    assert [p for p, r in timeline if r == "0001"][0] == "p1", out
    assert "all 120 orders enqueued during the rollout were written" in out, out
    assert "every order placed before the rollout has total_cents" in out, out
    for pod in ("p1", "p2", "p3"):
        assert re.search(rf"^    {pod}: tick .* UTC, 0 problem\(s\) \(consistent\)$", out, re.M), out
    assert re.search(r"^  scheduler pid \d+: exit 0 after SIGTERM", out, re.M), out


def test_demo_sql_runs_with_no_redis() -> None:
    """`make demo-sql`: a --backend sql cluster (ZooKeeper only), tenants routed to their
    pod's SQLite shard, workers per pod drain it: priorities, a retry, the dead set, a
    scheduled job."""
    proc = subprocess.run([sys.executable, "-m", "demo.sql_tour"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "demo-sql OK" in out, out
    assert "servers started: zookeeper; redis-server: 0" in out, out
    assert re.search(r"^p1\s+- \(queue on its shard: sql\)\s+sqlite:///", out, re.M), out
    # before the workers: p1's shard holds 15 ready jobs and the scheduled one, p2's 1
    assert re.search(r"^p1\s+15\s+0\s+1\s+0\s+0\s+0$", out, re.M), out
    assert re.search(r"^p2\s+1\s+0\s+0\s+0\s+0\s+0$", out, re.M), out
    for q, n in (("critical", 4), ("default", 11), ("low", 1)):
        assert re.search(rf"^{q}\s+{n}\s+{n}\s", out, re.M), out
    assert "send_receipt(1) ran on p1 (acme), send_receipt(100) on p2 (globex)" in out, out
    assert "partner API timed out (attempt 2)" in out, out
    assert "flaky_sync(7) succeeded on attempt 3" in out, out
    assert re.search(r"broken_export\(13\)\s+2\s+retries_exhausted\s+RuntimeError: export 13",
                     out), out
    assert re.search(r"nightly_report\(42\) ran [1-9]\.\d\d s after enqueue_in\(1\.0\)", out), out
    # afterwards: only the dead job is left
    assert re.search(r"^p1\s+0\s+0\s+0\s+0\s+1\s+0$", out, re.M), out
    assert "cluster down: stopped 1 servers (zookeeper zookeeper)" in out, out
    # `podjobs queues` over every pod and `podjobs dead list` read the SQL pods' tables
    assert re.search(r"^p1\s+default\s+11\s+\S+\s+0\s+0\s+0\s+running$", out, re.M), out
    assert re.search(r"^p1\s+low\s+1\s+\S+\s+1\s+0\s+0\s+running$", out, re.M), out
    assert re.search(r"^p2\s+critical\s+1\s", out, re.M), out
    assert re.search(r"^p1\s+\w{26}\s+demo\.sql_app\.broken_export\(13\)\s+low\s+2\s+.*"
                     r"retries_exhausted", out, re.M), out
