"""Enumerator builders: what `build_enumerator` returns.

An enumerator is any iterable of `(item, cursor_after_item)`: the cursor is what the job
needs to start again right after that item, and must be JSON (ints, strings, lists). The
builders here also say how many items there are in all (`total`) when they know it.

1. `int_range(start, stop, cursor)`: the integers of [start, stop); cursor = the last one done.
2. `rows(db, select, keys, cursor)` / `batches(...)`: rows (or lists of rows) of a SQLAlchemy
   select on the tenant's shard, in keyset order over one or more columns; cursor = the key
   values of the last row done. Each batch is one indexed query `WHERE keys > cursor
   ORDER BY keys LIMIT n`, never an OFFSET. `keyset_parts` cuts such a select into slices
   for parallel parts.
3. `csv_rows(path, cursor)`: the rows of a CSV file as dicts; cursor = rows consumed.
4. `nested(levels, cursor)`: an enumerator per item of an outer one (shops, then each
   shop's orders); cursor = one cursor per level.
5. `from_iterable(items, cursor, cursor_of=None)`: any iterable; cursor = items consumed, or
   `cursor_of(item)` for items in ascending order of it.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: rows fetched per query by `rows` and `batches`
DEFAULT_BATCH_SIZE = 100


class Enumerator(Generic[T]):
    """An iterable of (item, cursor after the item), with the total number of items when
    known (of the whole enumeration, not of what is left)."""

    def __init__(self, pairs: Iterable[tuple[T, Any]], total: int | None = None) -> None:
        self._pairs = pairs
        self.total = total

    def __iter__(self) -> Iterator[tuple[T, Any]]:
        return iter(self._pairs)


# -- integers -------------------------------------------------------------------------


def int_range(start: int, stop: int, cursor: int | None = None, step: int = 1) -> Enumerator[int]:
    """The integers of range(start, stop, step), each with itself as the cursor; resumes
    after `cursor`."""
    if step == 0:
        raise ValueError("step must not be 0")
    first = start if cursor is None else int(cursor) + step
    return Enumerator(((i, i) for i in range(first, stop, step)), len(range(start, stop, step)))


# -- SQL keyset ----------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat(sep=" ") if isinstance(v, dt.datetime) else v.isoformat()
    if isinstance(v, decimal.Decimal | uuid.UUID):
        return str(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def _after(cols: Sequence[Any], cursor: Sequence[Any]) -> Any:
    """(k1, k2, ...) > (c1, c2, ...) spelled out, which every database plans as an index range."""
    from sqlalchemy import and_, or_

    terms = []
    for i, col in enumerate(cols):
        eqs = [cols[j] == cursor[j] for j in range(i)]
        terms.append(and_(*eqs, col > cursor[i]))
    return or_(*terms)


def _key_of(row: Any, col: Any) -> Any:
    try:
        return row._mapping[col]
    except (KeyError, AttributeError):  # an ORM entity row: select(Model)
        return getattr(row[0], col.key)


def _keyset_pages(db: Any, stmt: Any, cols: Sequence[Any], cursor: Sequence[Any] | None,
                  batch_size: int, until: Sequence[Any] | None = None,
                  ) -> Iterator[tuple[list[Any], list[Any]]]:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    last = _check_key(cursor, cols, "cursor")
    upper = _check_key(until, cols, "until")
    if upper is not None:
        stmt = stmt.where(~_after(cols, upper))
    while True:
        q = stmt
        if last is not None:
            q = q.where(_after(cols, last))
        page = list(db.execute(q.order_by(*cols).limit(batch_size)))
        if not page:
            return
        last = [_jsonable(_key_of(page[-1], c)) for c in cols]
        yield page, last
        if len(page) < batch_size:
            return


def _check_key(key: Sequence[Any] | None, cols: Sequence[Any], what: str) -> list[Any] | None:
    if key is None:
        return None
    if len(key) != len(cols):
        raise ValueError(f"{what} {key!r} has {len(key)} values for {len(cols)} key columns")
    return list(key)


def _bounded(stmt: Any, cols: Sequence[Any], after: Sequence[Any] | None,
             until: Sequence[Any] | None) -> Any:
    if after is not None:
        stmt = stmt.where(_after(cols, after))
    if until is not None:
        stmt = stmt.where(~_after(cols, until))
    return stmt


def _count(db: Any, stmt: Any) -> int:
    from sqlalchemy import func, select

    return int(db.execute(select(func.count()).select_from(stmt.order_by(None).subquery())).scalar_one())


def _cols(keys: Any) -> list[Any]:
    return list(keys) if isinstance(keys, list | tuple) else [keys]


def rows(db: Any, stmt: Any, keys: Any, cursor: Sequence[Any] | None = None, *,
         batch_size: int = DEFAULT_BATCH_SIZE, count: bool = False,
         after: Sequence[Any] | None = None, until: Sequence[Any] | None = None) -> Enumerator[Any]:
    """Each row of `stmt` (a SQLAlchemy select) in ascending order of the key column(s)
    `keys` (unique together, e.g. the primary key), fetched `batch_size` at a time; cursor =
    [key values of the row]. `count=True` counts the rows first (for a total and an ETA).
    `after` / `until`: only keys > after and <= until (a part of `keyset_parts`)."""
    cols = _cols(keys)
    start = cursor if cursor is not None else after

    def pairs() -> Iterator[tuple[Any, Any]]:
        for page, _ in _keyset_pages(db, stmt, cols, start, batch_size, until):
            for row in page:
                yield row, [_jsonable(_key_of(row, c)) for c in cols]

    return Enumerator(pairs(), _count(db, _bounded(stmt, cols, after, until)) if count else None)


def batches(db: Any, stmt: Any, keys: Any, cursor: Sequence[Any] | None = None, *,
            batch_size: int = DEFAULT_BATCH_SIZE, count: bool = False,
            after: Sequence[Any] | None = None, until: Sequence[Any] | None = None,
            ) -> Enumerator[list[Any]]:
    """Like `rows`, but each item is a list of up to `batch_size` rows (one query); cursor =
    the key values of the batch's last row. The total counts batches."""
    cols = _cols(keys)
    total = None
    if count:
        n = _count(db, _bounded(stmt, cols, after, until))
        total = -(-n // batch_size)
    start = cursor if cursor is not None else after
    return Enumerator(_keyset_pages(db, stmt, cols, start, batch_size, until), total)


def keyset_parts(db: Any, stmt: Any, keys: Any, parts: int) -> list[dict[str, Any]]:
    """Cut the rows of `stmt` into at most `parts` slices of near-equal size in key order,
    for `IterationJob.enqueue_parallel(bounds, ...)`: each slice is {"after": key or None,
    "until": key or None} (keys > after, <= until), to pass to `rows`/`batches`. Costs one
    count and one indexed OFFSET query per boundary."""
    if parts < 1:
        raise ValueError(f"parts={parts} must be >= 1")
    cols = _cols(keys)
    n = _count(db, stmt)
    cuts: list[list[Any] | None] = [None]
    for k in range(1, min(parts, n)):
        off = k * n // parts - 1
        row = db.execute(stmt.order_by(*cols).limit(1).offset(off)).first()
        cut = [_jsonable(_key_of(row, c)) for c in cols]
        if cut != cuts[-1]:
            cuts.append(cut)
    cuts.append(None)
    return [{"after": cuts[i], "until": cuts[i + 1]} for i in range(len(cuts) - 1)]


# -- CSV ------------------------------------------------------------------------------


def csv_rows(path: str | Path, cursor: int | None = None, *, count: bool = True,
             encoding: str = "utf-8", **reader_kw: Any) -> Enumerator[dict[str, str]]:
    """The rows of a CSV file with a header line, as dicts; cursor = rows consumed."""
    skip = int(cursor or 0)
    total = None
    if count:
        with open(path, newline="", encoding=encoding) as f:
            total = sum(1 for _ in csv.DictReader(f, **reader_kw))

    def pairs() -> Iterator[tuple[dict[str, str], int]]:
        with open(path, newline="", encoding=encoding) as f:
            reader = csv.DictReader(f, **reader_kw)
            for i, row in enumerate(itertools.islice(reader, skip, None), start=skip + 1):
                yield row, i

    return Enumerator(pairs(), total)


# -- nested ---------------------------------------------------------------------------

#: a level of `nested`: (items of the outer levels..., cursor) -> an enumerator
Level = Callable[..., Iterable[tuple[Any, Any]]]


def nested(levels: Sequence[Level], cursor: Sequence[Any] | None = None) -> Enumerator[tuple[Any, ...]]:
    """One enumerator per item of the level above: levels[0](cursor) enumerates the outer
    items, levels[1](outer_item, cursor) the inner ones, and so on. Items are tuples
    (outer, ..., inner); the cursor holds one cursor per level (for the outer levels the
    position before their current item, so a resume re-enters it)."""
    if not levels:
        raise ValueError("nested needs at least one level")
    if cursor is not None and len(cursor) != len(levels):
        raise ValueError(f"cursor {cursor!r} has {len(cursor)} parts for {len(levels)} levels")
    last = len(levels) - 1

    def walk(depth: int, items: tuple[Any, ...], path: list[Any],
             resume: Sequence[Any] | None) -> Iterator[tuple[tuple[Any, ...], list[Any]]]:
        start = resume[depth] if resume is not None else None
        prev = start
        for item, after in levels[depth](*items, start):
            if depth == last:
                yield (*items, item), [*path, after]
            else:
                yield from walk(depth + 1, (*items, item), [*path, prev], resume)
            resume = None  # only the first item of a resumed level re-enters its inner cursor
            prev = after

    return Enumerator(walk(0, (), [], cursor))


# -- any iterable ---------------------------------------------------------------------


def from_iterable(items: Iterable[T], cursor: Any = None, *,
                  cursor_of: Callable[[T], Any] | None = None) -> Enumerator[T]:
    """Any iterable. Without `cursor_of` the cursor counts the items consumed (the iterable
    must give the same items in the same order each time); with it, items must come in
    ascending order of `cursor_of(item)`, and a resume skips those <= the cursor."""
    total = len(items) if isinstance(items, Sized) else None
    if cursor_of is None:
        skip = int(cursor or 0)
        return Enumerator(((x, i) for i, x in enumerate(itertools.islice(items, skip, None),
                                                       start=skip + 1)), total)
    key = cursor_of

    def pairs() -> Iterator[tuple[T, Any]]:
        for x in items:
            c = key(x)
            if cursor is not None and c <= cursor:
                continue
            yield x, c

    return Enumerator(pairs(), total)
