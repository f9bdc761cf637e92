"""The backfill of the data-migration test (tests/apps/migrations_data, revision d002).

`FillLabels` sets `items.label` = "item-<id>" for every row of its shard, a batch
of `batch` rows per item in id order, checkpointed after each batch.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, select, update

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
        for r in rows:
            ctx.db.execute(update(items).where(items.c.id == r.id).values(label=f"item-{r.id}"))
        time.sleep(sleep)
