"""The backfill of the data-migration test (tests/apps/migrations_data, revision d002).

`FillLabels` sets `items.label` = "item-<id>" for every row of its shard, a batch
of `batch` rows per item in id order, checkpointed after each batch. Each item
raises while the shard's `mig_control` row of d002 says fail (a failing backfill).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, select, text, update

import podjobs
from podjobs.context import Context
from podjobs.iteration import IterationJob, enumerators

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True),
              Column("label", String(32), nullable=True))


class FillLabels(IterationJob):
    job_name = "dm.fill_labels"
    retries = 3
    backoff = staticmethod(podjobs.constant(0.05))

    def build_enumerator(self, ctx: Context, cursor: Any, *, batch: int = 20,
                         sleep: float = 0.05) -> Any:
        return enumerators.batches(ctx.db, select(items.c.id), [items.c.id], cursor,
                                   batch_size=batch, count=True)

    def each_iteration(self, ctx: Context, rows: Any, *, batch: int = 20,
                       sleep: float = 0.05) -> None:
        fail = ctx.db.execute(text("SELECT fail FROM mig_control WHERE rev = 'd002'")).scalar()
        if fail:
            raise RuntimeError("the backfill fails (mig_control says so)")
        for r in rows:
            ctx.db.execute(update(items).where(items.c.id == r.id).values(label=f"item-{r.id}"))
        time.sleep(sleep)
