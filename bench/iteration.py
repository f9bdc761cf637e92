"""Job iteration: items per second against how often the cursor is checkpointed.

A one-pod cluster with a MariaDB shard (`Cluster(tmpdir).up(1, db="mysql")`) and an
in-process worker (one executor thread) run an iteration job over a table in keyset order
(rows fetched 100 at a time), with a checkpoint after every item, every 100 items, and
none until the end. Two kinds of item:

- "update": each item updates its row on the shard (`ctx.db`); a checkpoint commits the
  shard first, then writes the cursor to Redis (one Lua call), so checkpointing every item
  is also a commit per item;
- "no-op": the item does nothing, which leaves the bare cost of the loop and checkpoints.

Rounds alternate between the variants so machine noise hits all alike; medians are shown.
Run: `.venv/bin/python -m bench.iteration` (BENCH_ITER_ROWS, BENCH_ITER_ROUNDS to change
the size). Writes bench/results/iteration.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select, update

import podjobs
from podjobs.backend import RedisBackend
from podjobs.context import Context
from podjobs.infra.cluster import Cluster
from podjobs.iteration import IterationJob, State, enumerators
from podjobs.iteration.admin import Iterations
from podjobs.table import render
from podjobs.worker import Worker, WorkerConfig

REPO = Path(__file__).resolve().parent.parent
ROWS = int(os.environ.get("BENCH_ITER_ROWS", "5000"))
ROUNDS = int(os.environ.get("BENCH_ITER_ROUNDS", "3"))
QUEUE = "bench_iter"

metadata = MetaData()
table = Table("bench_iter", metadata, Column("id", Integer, primary_key=True, autoincrement=False),
              Column("value", Integer, nullable=False))


class _Base(IterationJob):
    queue = QUEUE
    max_runtime = None

    def build_enumerator(self, ctx: Context, cursor: Any, *, write: bool) -> Any:
        return enumerators.rows(ctx.db, select(table.c.id), table.c.id, cursor, batch_size=100)

    def each_iteration(self, ctx: Context, row: Any, *, write: bool) -> None:
        if write:
            ctx.db.execute(update(table).where(table.c.id == row.id).values(value=table.c.value + 1))


class EveryItem(_Base):
    job_name = "bench.iter_every_item"
    checkpoint_every = 1


class Every100(_Base):
    job_name = "bench.iter_every_100"
    checkpoint_every = 100


class NoCheckpoint(_Base):
    job_name = "bench.iter_none"
    checkpoint_every = None


VARIANTS: list[tuple[str, type[_Base]]] = [("every item", EveryItem), ("every 100 items", Every100),
                                           ("none (end only)", NoCheckpoint)]


def run_once(adm: Iterations, job: type[_Base], write: bool) -> float:
    """Items per second of one run, from its own progress record (time spent running)."""
    h = job.enqueue(write=write)
    deadline = time.monotonic() + 600
    while True:
        p = adm.get(h.id)
        if p is not None and p.state is State.SUCCEEDED:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{job.__name__} did not finish: {p}")
        time.sleep(0.02)
    assert p.done == ROWS, p
    return p.done / p.elapsed_s


def main() -> int:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="podjobs-bench-iter-") as d:
        cluster = Cluster(d, die_with_parent=True)
        print("bench: starting a one-pod cluster with a MariaDB shard ...", file=sys.stderr, flush=True)
        topo = cluster.up(1, db="mysql")
        try:
            pod = topo.pods[0]
            engine = create_engine(pod.shard_url)
            metadata.create_all(engine)
            with engine.begin() as c:
                c.execute(insert(table), [{"id": i, "value": 0} for i in range(ROWS)])
            backend = RedisBackend(pod.redis_url)
            podjobs.configure(pod.redis_url)
            adm = Iterations(backend)
            w = Worker(backend, WorkerConfig(queues=[QUEUE], concurrency=1, shard_url=pod.shard_url,
                                             pod=pod.name, poll_interval=0.05, idle_wait=0.2))
            w.start()
            try:
                samples: dict[tuple[str, bool], list[float]] = {}
                for rnd in range(ROUNDS):
                    for write in (True, False):
                        for name, job in VARIANTS:
                            print(f"bench: round {rnd + 1}/{ROUNDS}, {'update' if write else 'no-op'}"
                                  f" items, checkpoint {name} ...", file=sys.stderr, flush=True)
                            samples.setdefault((name, write), []).append(run_once(adm, job, write))
            finally:
                w.stop()
            engine.dispose()
        finally:
            cluster.down(purge=True)
    for (name, write), xs in samples.items():
        results.setdefault(name, {})["update_per_s" if write else "noop_per_s"] = statistics.median(xs)
    print(render(["checkpoint", "items/s, update a row per item", "items/s, no-op item"],
                 [[name, f"{v['update_per_s']:,.0f}", f"{v['noop_per_s']:,.0f}"]
                  for name, v in results.items()]))
    print(f"\n{ROWS:,} rows, keyset pages of 100, one executor thread; medians of {ROUNDS} rounds."
          "\nA checkpoint = commit the shard's transaction, then one Lua call on the pod's Redis.")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "iteration.json").write_text(json.dumps({"rows": ROWS, "rounds": ROUNDS, **results}, indent=2))
    print(f"\nwritten: {out / 'iteration.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
