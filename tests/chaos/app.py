"""Jobs of the chaos scenarios. Each records its start and finish, with its job id, in the
ledger ($PODJOBS_LEDGER_DIR; see ledger.py), whatever the worker or the fault.

- `chaos.work(seconds)`: at-least-once, sleeps `seconds`;
- `chaos.once(seconds)`: the same with delivery at_most_once;
- `chaos.gate(path, timeout)`: at-least-once, runs until the file `path` exists (at most
  `timeout` seconds): a scenario keeps a pod's executor slots busy until it opens the gate;
- `chaos.charge(use_once)`: at-least-once, writes one row into `chaos_charges` on its pod's
  shard through `ctx.db`, under `ctx.once(f"charge:{job_id}")` (or, `use_once=False`, the
  control: without it). With $PODJOBS_CHAOS_DIE_AFTER_COMMIT=k the worker process SIGKILLs
  itself right after the shard commit of its k-th charge, before the ack (the window where a
  re-run would repeat the effect);
- `chaos.count(n, seconds)`: an iteration job over 0..n-1; each item is one ledger entry
  with the id `JOBID:i` (items are checkpointed one by one, so an item runs twice only
  when a worker is cut off in it).
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from typing import Any

import podjobs
from podjobs.context import Context
from podjobs.iteration import IterationJob, enumerators
from tests.chaos.ledger import ENV, Ledger

_ledger: Ledger | None = None


def ledger() -> Ledger:
    global _ledger
    if _ledger is None:
        _ledger = Ledger(os.environ[ENV])
    return _ledger


@podjobs.job(name="chaos.work", queue="default", retries=5, backoff=podjobs.constant(0.05))
def work(ctx: Context, seconds: float = 0.0) -> None:
    with ledger().run_guard(ctx.job_id, worker=ctx.worker_id or "", claimed=ctx.claimed_at):
        if seconds:
            time.sleep(seconds)


@podjobs.job(name="chaos.once", queue="default", delivery="at_most_once")
def once(ctx: Context, seconds: float = 0.0) -> None:
    with ledger().run_guard(ctx.job_id, amo=True, worker=ctx.worker_id or "",
                            claimed=ctx.claimed_at):
        if seconds:
            time.sleep(seconds)


@podjobs.job(name="chaos.gate", queue="default", retries=5, backoff=podjobs.constant(0.05))
def gate(ctx: Context, path: str, timeout: float = 30.0) -> None:
    with ledger().run_guard(ctx.job_id):
        deadline = time.monotonic() + timeout
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)


CHARGES = "chaos_charges"
DIE_AFTER_COMMIT = "PODJOBS_CHAOS_DIE_AFTER_COMMIT"
_charges = itertools.count(1)  # next() is atomic under the GIL


def _die(session: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@podjobs.job(name="chaos.charge", queue="default", retries=10, backoff=podjobs.constant(0.05))
def charge(ctx: Context, use_once: bool = True) -> None:
    from sqlalchemy import event, text

    with ledger().run_guard(ctx.job_id, worker=ctx.worker_id or "", claimed=ctx.claimed_at):
        if not use_once or ctx.once(f"charge:{ctx.job_id}"):
            ctx.db.execute(text(f"INSERT INTO {CHARGES} (job_id) VALUES (:j)"),
                           {"j": ctx.job_id})
        die_after = int(os.environ.get(DIE_AFTER_COMMIT) or 0)
        if die_after and next(_charges) == die_after:
            event.listen(ctx.db, "after_commit", _die)


class Count(IterationJob):
    """Items 0..n-1, `seconds` each; a checkpoint after every item."""

    job_name = "chaos.count"
    retries = 5
    checkpoint_every = 1
    backoff = staticmethod(podjobs.constant(0.05))

    def build_enumerator(self, ctx: Context, cursor: Any, *, n: int,
                         seconds: float = 0.0) -> Any:
        return enumerators.int_range(0, n, cursor)

    def each_iteration(self, ctx: Context, i: int, *, n: int, seconds: float = 0.0) -> None:
        with ledger().run_guard(f"{ctx.job_id}:{i}"):
            if seconds:
                time.sleep(seconds)
