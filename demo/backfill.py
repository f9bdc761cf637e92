"""Section 4 of `make demo` (demo/run.py): an iteration job's backfill that survives a
worker restart, drawn as a progress bar and read back from the shard."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import sqlalchemy

from demo.common import DemoFailed, heading, run_cli, spawn_worker, stop_workers
from podjobs.backend import RedisBackend
from podjobs.infra.topofile import Topology
from podjobs.iteration import Progress, State
from podjobs.iteration.admin import Iterations
from podjobs.ops import Inspector
from podjobs.table import render

#: the backfill: on this pod, for this tenant; rows of another tenant of the pod stay untouched
BACKFILL_POD, BACKFILL_TENANT, OTHER_TENANT = "p1", "shop-1", "shop-4"
#: accounts 1..N; every OTHER_EVERY-th one belongs to OTHER_TENANT (30,000 + 3,000)
BACKFILL_ACCOUNTS, OTHER_EVERY = 33_000, 11
BACKFILL_BATCH = 250
#: seconds the job sleeps after each batch (a throttled backfill; about 5 s in all)
BACKFILL_PAUSE_S = 0.02
#: the worker gets SIGTERM once this share of the batches is done
INTERRUPT_AT = 0.4
BACKFILL_TIMEOUT = 30.0
#: seconds between progress lines when stdout is not a terminal
PROGRESS_EVERY_S = 0.5


def account_tenant(account_id: int) -> str:
    return OTHER_TENANT if account_id % OTHER_EVERY == 0 else BACKFILL_TENANT


def create_accounts(engine: sqlalchemy.Engine) -> dict[str, int]:
    """`accounts` on the shard, filled in one bulk insert; rows per tenant."""
    from demo import app

    app.backfill_metadata.drop_all(engine)
    app.backfill_metadata.create_all(engine)
    rows = [{"id": i, "tenant": account_tenant(i), "fingerprint": None, "backfilled": 0}
            for i in range(1, BACKFILL_ACCOUNTS + 1)]
    t = time.monotonic()
    with engine.begin() as conn:
        conn.execute(sqlalchemy.insert(app.accounts), rows)
    secs = time.monotonic() - t
    per_tenant: dict[str, int] = {}
    for i in range(1, BACKFILL_ACCOUNTS + 1):
        per_tenant[account_tenant(i)] = per_tenant.get(account_tenant(i), 0) + 1
    print(f"  table accounts(id, tenant, fingerprint NULL, backfilled 0) on podjobs_{BACKFILL_POD}: "
          f"{len(rows):,} rows in one bulk insert ({secs:.2f} s): "
          + ", ".join(f"{tenant} {n:,}" for tenant, n in per_tenant.items()))
    return per_tenant


class ProgressBar:
    """One line redrawn in place (\r) on a terminal; else a line every `every` seconds, and
    whenever `update(..., force=True)`."""

    def __init__(self, every: float = PROGRESS_EVERY_S) -> None:
        self.tty = sys.stdout.isatty()
        self.every = every
        self.last_t = -1e9
        self.last_line = ""
        self.open = False  # a terminal line without its newline yet

    def columns(self) -> int | None:
        """The terminal's width, or None when stdout is not a terminal."""
        return shutil.get_terminal_size().columns if self.tty else None

    def update(self, line: str, force: bool = False) -> None:
        if self.tty:
            sys.stdout.write(f"\r  {line}\x1b[K")
            sys.stdout.flush()
            self.open = True
            self.last_line = line
            return
        now = time.monotonic()
        if line != self.last_line and (force or now - self.last_t >= self.every):
            print(f"  {line}")
            self.last_t, self.last_line = now, line

    def end(self) -> None:
        if self.open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.open = False


def rows_done(p: Progress, total_rows: int) -> int:
    """Every batch but the last is full."""
    return min(p.done * BACKFILL_BATCH, total_rows)


def progress_line(p: Progress, total_rows: int, columns: int | None = None) -> str:
    """`[####....]  41.7%  12,500/30,000 rows  50/120 batches  7,886 rows/s  eta 2.2 s  running`;
    with `columns` (a terminal's width) the bar narrows, then the batches go, then the line is
    cut, to fit."""
    frac = p.done / p.total if p.total else 0.0
    total = f"{p.total:,}" if p.total is not None else "?"
    rate = f"{p.rate * BACKFILL_BATCH:,.0f} rows/s" if p.rate else "- rows/s"
    eta = f"eta {p.eta_s:.1f} s" if p.eta_s is not None else "eta -"
    head = f"{100 * frac:5.1f}%  {rows_done(p, total_rows):>6,}/{total_rows:,} rows  "
    tail = f"{rate:>13}  {eta:<9}  {p.state.value}"
    text = f"{head}{p.done:>3}/{total} batches  {tail}"
    width = 24
    if columns is not None:  # "  [" + bar + "] " + text must fit in columns - 1
        room = columns - 6
        if room - len(text) < 8:
            text = head + tail
        width = max(8, min(width, room - len(text)))
    filled = int(round(frac * width))
    line = f"[{'#' * filled}{'.' * (width - filled)}] {text}"
    return line if columns is None else line[:max(0, columns - 3)]


def follow(adm: Iterations, job_id: str, total_rows: int, bar: ProgressBar,
           until: Callable[[Progress], bool], watch: list[subprocess.Popen[bytes]]) -> Progress:
    """Draw the job's progress until `until(progress)`; DemoFailed if it ends otherwise."""
    t0 = time.monotonic()
    state = None
    try:
        while True:
            p = adm.get(job_id)
            if p is None:
                raise DemoFailed(f"iteration job {job_id} is not in Redis")
            done = until(p)
            bar.update(progress_line(p, total_rows, bar.columns()),
                       force=done or p.state != state)
            state = p.state
            if done:
                return p
            if p.state in (State.SUCCEEDED, State.CANCELLED, State.ERRORED, State.PAUSED):
                raise DemoFailed(f"the backfill is {p.state.value} ({p.error or p.reason or '-'})")
            for w in watch:
                if w.poll() is not None:
                    raise DemoFailed(f"worker pid {w.pid} exited with code {w.returncode}")
            if time.monotonic() - t0 > BACKFILL_TIMEOUT:
                raise DemoFailed(f"backfill: {p.done}/{p.total} batches after "
                                 f"{BACKFILL_TIMEOUT:.0f} s")
            time.sleep(0.1)
    finally:
        bar.end()


def shard_at_checkpoint(engine: sqlalchemy.Engine, cursor: int) -> tuple[int, int]:
    """(rows backfilled up to the cursor, rows backfilled after it) of the tenant."""
    from demo import app

    a = app.accounts
    done = sqlalchemy.func.sum(sqlalchemy.case((a.c.id <= cursor, 1), else_=0))
    beyond = sqlalchemy.func.sum(sqlalchemy.case((a.c.id > cursor, 1), else_=0))
    query = sqlalchemy.select(done, beyond).where(a.c.tenant == BACKFILL_TENANT, a.c.backfilled > 0)
    with engine.connect() as conn:
        row = conn.execute(query).one()
    return int(row[0] or 0), int(row[1] or 0)


def report_runs(r: redis.Redis, stopped_at: Any, old_pid: int, new_pid: int) -> None:
    """The job's runs as its hooks logged them; DemoFailed unless run 2 resumed run 1's cursor
    with the same attempt, on the new worker."""
    from demo import app

    log = [json.loads(x) for x in r.lrange(app.RUNS_KEY, 0, -1)]
    runs = []
    for e in log:
        if e["hook"] in ("start", "resume"):
            runs.append({"pid": e["pid"], "attempt": e["attempt"],
                         "from": "the beginning" if e["hook"] == "start"
                         else f"resumed from cursor {json.dumps(e['cursor'])}", "to": "-"})
        elif e["hook"] == "shutdown" and runs:
            runs[-1]["to"] = json.dumps(e["cursor"])
    print("\n  the job's runs (from its on_start / on_resume / on_shutdown hooks):")
    print("\n".join("    " + line for line in render(
        ["run", "worker pid", "attempt", "started at", "ended at cursor"],
        [[i, x["pid"], x["attempt"], x["from"], x["to"]] for i, x in enumerate(runs, 1)]
    ).splitlines()))
    last = max(i for i in range(1, BACKFILL_ACCOUNTS + 1) if account_tenant(i) == BACKFILL_TENANT)
    want = [(old_pid, 1, "the beginning", json.dumps(stopped_at)),
            (new_pid, 1, f"resumed from cursor {json.dumps(stopped_at)}", json.dumps([last]))]
    got = [(x["pid"], x["attempt"], x["from"], x["to"]) for x in runs]
    if got != want:
        raise DemoFailed(f"the job's runs {got}, expected {want}")


def verify_backfill(engine: sqlalchemy.Engine, per_tenant: dict[str, int]) -> None:
    """Every row of the tenant has fingerprint = f(id) and backfilled = 1; the other tenant's
    rows are untouched."""
    from demo import app

    a = app.accounts
    with engine.connect() as conn:
        got = conn.execute(sqlalchemy.select(a.c.id, a.c.tenant, a.c.fingerprint, a.c.backfilled)).all()
    stats: dict[str, dict[str, int]] = {}
    for account_id, tenant, fp, n in got:
        s = stats.setdefault(tenant, {"rows": 0, "f(id)": 0, "null": 0, "0": 0, "1": 0, ">1": 0})
        s["rows"] += 1
        s["f(id)"] += fp == app.fingerprint(account_id)
        s["null"] += fp is None
        s["0" if n == 0 else "1" if n == 1 else ">1"] += 1
    print(render(["tenant", "rows", "fingerprint = f(id)", "fingerprint NULL", "backfilled 0",
                  "backfilled 1", "backfilled >1"],
                 [[t, f"{s['rows']:,}", f"{s['f(id)']:,}", f"{s['null']:,}", f"{s['0']:,}",
                   f"{s['1']:,}", f"{s['>1']:,}"] for t, s in sorted(stats.items())]))
    mine, other = per_tenant[BACKFILL_TENANT], per_tenant[OTHER_TENANT]
    want = {BACKFILL_TENANT: {"rows": mine, "f(id)": mine, "null": 0, "0": 0, "1": mine, ">1": 0},
            OTHER_TENANT: {"rows": other, "f(id)": 0, "null": other, "0": other, "1": 0, ">1": 0}}
    if stats != want:
        raise DemoFailed(f"accounts after the backfill: {stats}, expected {want}")
    print(f"verified: every one of {BACKFILL_TENANT}'s {mine:,} rows backfilled exactly once "
          f"(fingerprint = id * {app.FINGERPRINT_MUL} mod 2^32, backfilled = 1); "
          f"{OTHER_TENANT}'s {other:,} rows untouched")


def backfill_section(topology: Topology, engines: dict[str, sqlalchemy.Engine], spec: str,
                     workers: list[subprocess.Popen[bytes]], pod_worker: subprocess.Popen[bytes],
                     tmp: Path) -> None:
    """See the module docstring, step 4. Keeps `workers` current (for the teardown)."""
    from demo import app

    pod = topology.pod(BACKFILL_POD)
    engine = engines[BACKFILL_POD]
    heading(f"a backfill that survives a worker restart ({BACKFILL_POD}, tenant {BACKFILL_TENANT})")
    per_tenant = create_accounts(engine)
    total_rows = per_tenant[BACKFILL_TENANT]
    r = redis.Redis.from_url(pod.redis_url)
    backend = RedisBackend(pod.redis_url)
    try:
        adm, ins = Iterations(backend), Inspector(backend)
        h = app.BackfillFingerprints.enqueue(batch=BACKFILL_BATCH, pause_s=BACKFILL_PAUSE_S,
                                             tenant=BACKFILL_TENANT)
        print(f"  BackfillFingerprints.enqueue(batch={BACKFILL_BATCH}, pause_s={BACKFILL_PAUSE_S}, "
              f'tenant="{BACKFILL_TENANT}") -> job {h.id} on {h.pod or BACKFILL_POD}, queue {h.queue}')
        print(f"  each item: UPDATE {BACKFILL_BATCH} rows (keyset on id), then a checkpoint "
              f"(shard commit + cursor in Redis); {BACKFILL_POD}'s worker pid {pod_worker.pid} runs it")
        bar = ProgressBar()
        t_job = time.monotonic()

        def far_enough(p: Progress) -> bool:
            return p.total is not None and p.done >= INTERRUPT_AT * p.total

        p = follow(adm, h.id, total_rows, bar, far_enough, [pod_worker])

        print(f"\n  SIGTERM to {BACKFILL_POD}'s worker pid {pod_worker.pid} mid-backfill "
              f"({p.done}/{p.total} batches checkpointed):")
        clean = stop_workers([pod_worker])
        workers.remove(pod_worker)
        if not clean:
            raise DemoFailed(f"{BACKFILL_POD}'s worker did not exit 0 on SIGTERM")
        p = adm.get(h.id) or p
        if (p.state, p.reason, p.interrupted) != (State.INTERRUPTED, "shutdown", 1):
            raise DemoFailed(f"after SIGTERM the job is {p.state.value} (reason {p.reason!r}, "
                             f"interrupted {p.interrupted}), expected interrupted by a shutdown")
        stopped_at = p.cursor
        print(f"  interrupted at cursor {json.dumps(stopped_at)}: {p.done}/{p.total} batches "
              f"({rows_done(p, total_rows):,} rows) checkpointed, state {p.state.value}, "
              f"last stop {p.reason}")
        up_to, beyond = shard_at_checkpoint(engine, int(stopped_at[0]))
        print(f"  the shard agrees: {up_to:,} rows backfilled, all with id <= {stopped_at[0]}; "
              f"{beyond} after the cursor")
        if (up_to, beyond) != (rows_done(p, total_rows), 0):
            raise DemoFailed(f"shard at the checkpoint: {up_to} rows up to the cursor, {beyond} "
                             f"beyond, expected {rows_done(p, total_rows)} and 0")
        found = ins.find_job(h.id)
        attempt = found.payload.get("attempt", 0)  # absent before a run: 0
        print(f"  back on queue {found.queue} with cursor "
              f"{json.dumps(found.payload.get('cursor'))} and attempt {attempt}: a resume, not a "
              f"retry; attempts did not grow")
        if (found.where, found.payload.get("cursor"), attempt) != ("queue", stopped_at, 0):
            raise DemoFailed(f"the interrupted job is {found.where} with cursor "
                             f"{found.payload.get('cursor')} and attempt {attempt}")

        new = spawn_worker(["--pod", BACKFILL_POD, "--zk", spec], pod.redis_url,
                           tmp / f"worker-{BACKFILL_POD}-2.log")
        workers.append(new)
        print(f"\n  a new worker: podjobs worker --pod {BACKFILL_POD} --zk {spec} -> pid {new.pid}")
        p = follow(adm, h.id, total_rows, bar, lambda p: p.state is State.SUCCEEDED, [new])
        print(f"  {p.state.value}: {p.done}/{p.total} batches, {rows_done(p, total_rows):,} rows "
              f"in {time.monotonic() - t_job:.1f} s ({p.elapsed_s:.1f} s running, "
              f"{p.runs} runs, {p.interrupted} interrupted)")
        report_runs(r, stopped_at, pod_worker.pid, new.pid)
        run_cli(["iterations", "show", h.id, "--pod", BACKFILL_POD, "--zk", spec])
    finally:
        r.close()
        backend.close()

    heading(f"the shard after the backfill (read back from podjobs_{BACKFILL_POD}.accounts)")
    verify_backfill(engine, per_tenant)
