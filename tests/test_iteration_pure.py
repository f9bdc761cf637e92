"""Job iteration without servers: pure decisions from tables, enumerators, and the inline
test helper (`podjobs.iteration.testing`) running the real run loop on a MemoryStore."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select
from sqlalchemy.orm import Session

from podjobs.context import Context
from podjobs.iteration import IterationJob, State, enumerators
from podjobs.iteration.parallel import group_state
from podjobs.iteration.state import Progress, checkpoint_due, split_range
from podjobs.iteration.testing import iterate

S = State


@pytest.mark.parametrize(("pending", "since", "every", "interval", "due"), [
    (0, 99.0, 1, 1.0, False),  # nothing to save
    (1, 0.0, 1, None, True),
    (99, 0.0, 100, None, False),
    (100, 0.0, 100, None, True),
    (5, 2.0, 100, 1.5, True),  # time-based
    (5, 1.0, 100, 1.5, False),
    (5, 9.0, None, None, False),  # only when the run stops
    (5, 9.0, 0, None, False),
])
def test_checkpoint_due(pending: int, since: float, every: int | None, interval: float | None,
                        due: bool) -> None:
    assert checkpoint_due(pending, since, every, interval) is due


@pytest.mark.parametrize(("start", "stop", "parts", "expected"), [
    (0, 10, 3, [(0, 4), (4, 7), (7, 10)]),
    (0, 4, 4, [(0, 1), (1, 2), (2, 3), (3, 4)]),
    (0, 2, 5, [(0, 1), (1, 2)]),  # never an empty part
    (5, 5, 3, [(5, 5)]),
    (10, 20, 1, [(10, 20)]),
])
def test_split_range(start: int, stop: int, parts: int, expected: list[tuple[int, int]]) -> None:
    assert split_range(start, stop, parts) == expected


@pytest.mark.parametrize(("states", "expected"), [
    ([S.SUCCEEDED, S.SUCCEEDED], S.SUCCEEDED),
    ([S.SUCCEEDED, S.CANCELLED], S.CANCELLED),
    ([S.SUCCEEDED, S.RUNNING, S.ENQUEUED], S.RUNNING),
    ([S.RUNNING, S.CANCELLING], S.CANCELLING),
    ([S.ERRORED, S.PAUSED], S.ERRORED),
    ([S.PAUSED, S.SUCCEEDED], S.PAUSED),
    ([S.INTERRUPTED, S.ENQUEUED], S.INTERRUPTED),
    ([S.ENQUEUED, S.CANCELLED], S.ENQUEUED),
])
def test_group_state(states: list[State], expected: State) -> None:
    assert group_state(states) is expected


def test_progress_rate_and_eta_from_a_hash() -> None:
    h = {"state": "running", "job": "j", "queue": "q", "done": "300", "total": "1000",
         "elapsed_ms": "2000", "tick_ms": "10000", "cursor": "[3, 7]", "interrupted": "2"}
    p = Progress.from_hash("ID", h, now_ms=11000)  # 1 s since the last checkpoint
    assert p.elapsed_s == 3.0 and p.rate == 100.0 and p.eta_s == 7.0
    assert p.cursor == [3, 7] and p.percent == 30.0 and p.interrupted == 2
    assert p.as_dict()["state"] == "running"


# -- enumerators ----------------------------------------------------------------------


def drain(e: Any) -> list[tuple[Any, Any]]:
    return list(e)


def test_int_range_resumes_after_its_cursor() -> None:
    e = enumerators.int_range(0, 5)
    assert e.total == 5 and drain(e) == [(i, i) for i in range(5)]
    assert drain(enumerators.int_range(0, 5, cursor=2)) == [(3, 3), (4, 4)]
    assert drain(enumerators.int_range(0, 10, cursor=4, step=3)) == [(7, 7)]


def test_from_iterable_by_position_and_by_key() -> None:
    assert drain(enumerators.from_iterable("abcd", 2)) == [("c", 3), ("d", 4)]
    rows = [{"k": 1}, {"k": 5}, {"k": 9}]
    got = drain(enumerators.from_iterable(rows, 5, cursor_of=lambda r: r["k"]))
    assert got == [({"k": 9}, 9)]


def test_nested_resumes_inside_the_outer_item() -> None:
    shops = {"a": [1, 2, 3], "b": [4], "c": [5, 6]}
    levels = [lambda cur: enumerators.from_iterable(sorted(shops), cur),
              lambda shop, cur: enumerators.from_iterable(shops[shop], cur)]
    full = drain(enumerators.nested(levels))
    assert [items for items, _ in full] == [("a", 1), ("a", 2), ("a", 3), ("b", 4), ("c", 5), ("c", 6)]
    for k, (_, cursor) in enumerate(full):  # resuming after any item gives exactly the rest
        rest = drain(enumerators.nested(levels, cursor))
        assert [items for items, _ in rest] == [items for items, _ in full[k + 1:]]


def test_csv_rows(tmp_path: Path) -> None:
    f = tmp_path / "in.csv"
    f.write_text('name,n\nx,1\n"y, with comma",2\nz,3\n')
    e = enumerators.csv_rows(f)
    assert e.total == 3 and [c for _, c in e] == [1, 2, 3]
    assert drain(enumerators.csv_rows(f, 1, count=False)) == [({"name": "y, with comma", "n": "2"}, 2),
                                                              ({"name": "z", "n": "3"}, 3)]


meta = MetaData()
kv = Table("kv", meta, Column("a", Integer, primary_key=True), Column("b", String(8), primary_key=True),
           Column("v", Integer))


@pytest.fixture
def db(tmp_path: Path) -> Any:
    e = create_engine(f"sqlite:///{tmp_path / 'shard.db'}")
    meta.create_all(e)
    with e.begin() as c:
        c.execute(insert(kv), [{"a": a, "b": b, "v": a * 10} for a in (3, 1, 2) for b in ("y", "x")])
    s = Session(e)
    yield s
    s.close()
    e.dispose()


def test_keyset_rows_and_batches_on_two_columns(db: Session) -> None:
    stmt = select(kv.c.a, kv.c.b, kv.c.v)
    rows = drain(enumerators.rows(db, stmt, [kv.c.a, kv.c.b], batch_size=4, count=True))
    assert [c for _, c in rows] == [[1, "x"], [1, "y"], [2, "x"], [2, "y"], [3, "x"], [3, "y"]]
    rest = drain(enumerators.rows(db, stmt, [kv.c.a, kv.c.b], [2, "x"], batch_size=2))
    assert [(r.a, r.b) for r, _ in rest] == [(2, "y"), (3, "x"), (3, "y")]
    b = enumerators.batches(db, stmt, [kv.c.a, kv.c.b], batch_size=4, count=True)
    got = drain(b)
    assert b.total == 2 and [len(x) for x, _ in got] == [4, 2] and got[0][1] == [2, "y"]


# -- the inline helper and the run loop ---------------------------------------------


class Squares(IterationJob):
    checkpoint_every = 2
    seen: list[int] = []
    hooks: list[str] = []

    def build_enumerator(self, ctx: Context, cursor: Any, *, n: int) -> Any:
        return enumerators.int_range(0, n, cursor)

    def each_iteration(self, ctx: Context, i: int, *, n: int) -> None:
        Squares.seen.append(i)

    def on_start(self, ctx: Context, *, n: int) -> None:
        Squares.hooks.append("start")

    def on_resume(self, ctx: Context, *, n: int) -> None:
        Squares.hooks.append(f"resume@{self.cursor}")

    def on_shutdown(self, ctx: Context, *, n: int) -> None:
        Squares.hooks.append("shutdown")

    def on_complete(self, ctx: Context, *, n: int) -> None:
        Squares.hooks.append("complete")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Squares.seen, Squares.hooks = [], []


def test_iterate_exactly_n_items_then_go_on() -> None:
    run = iterate(Squares, iterations=3, n=10)
    assert (run.state, run.items, run.cursor, run.reason) == ("interrupted", 3, 2, "limit")
    run = run.next(iterations=4)
    assert (run.state, run.items, run.done, run.cursor) == ("interrupted", 4, 7, 6)
    run = run.next()
    assert (run.state, run.items, run.done) == ("succeeded", 3, 10)
    assert Squares.seen == list(range(10))
    assert Squares.hooks == ["start", "shutdown", "resume@2", "shutdown", "resume@6", "complete",
                             "shutdown"]
    assert iterate(Squares, n=10, job_id=run.job_id, store=run.store).state == "succeeded"
    assert Squares.seen == list(range(10))  # a finished job does not run again


def test_iterate_from_a_given_cursor() -> None:
    assert iterate(Squares, cursor=6, n=8).state == "succeeded"
    assert Squares.seen == [7]


def test_pause_and_cancel_requests_stop_at_the_next_checkpoint() -> None:
    run = iterate(Squares, iterations=1, n=10)
    run.store.request(run.job_id, "pause")
    run = run.next()
    assert run.state == "paused" and run.items == 0  # parked when it starts
    run.store.request(run.job_id, "cancel")
    assert run.next().state == "cancelled"


def test_cancel_while_running_stops_at_a_checkpoint() -> None:
    class Cancels(Squares):
        def each_iteration(self, ctx: Context, i: int, *, n: int) -> None:
            super().each_iteration(ctx, i, n=n)
            if i == 2:
                ctx.extras["podjobs.iteration.store"].request(ctx.job_id, "cancel")

    run = iterate(Cancels, n=10)
    assert run.state == "cancelled" and Squares.seen == [0, 1, 2, 3]  # checkpoint after item 3


def test_throttle_and_stopping_interrupt_at_an_item_boundary() -> None:
    flag = {"on": False}

    class Throttled(Squares):
        def each_iteration(self, ctx: Context, i: int, *, n: int) -> None:
            super().each_iteration(ctx, i, n=n)
            flag["on"] = i == 4

    Throttled.throttle_on(lambda ctx: flag["on"], backoff=7)
    run = iterate(Throttled, n=10)
    assert (run.state, run.reason, run.delay, run.cursor) == ("interrupted", "throttled", 7, 4)
    stop = threading.Event()
    stop.set()
    run = iterate(Squares, n=10, stopping=stop)
    assert (run.state, run.reason, run.items) == ("interrupted", "shutdown", 0)


def test_an_error_keeps_the_progress_made_without_a_database() -> None:
    class Fails(Squares):
        checkpoint_every = 100

        def each_iteration(self, ctx: Context, i: int, *, n: int) -> None:
            if i == 5 and ctx.extras.get("fail", True):
                raise ValueError("boom")
            super().each_iteration(ctx, i, n=n)

    from podjobs.iteration.store import MemoryStore

    store = MemoryStore()
    with pytest.raises(ValueError, match="boom"):
        iterate(Fails, n=8, store=store, job_id="J1")
    rec = store.record("J1")
    assert (rec.state, rec.cursor, rec.done) == ("errored", 4, 5)


def test_job_arguments_come_from_build_enumerator() -> None:
    import inspect

    assert str(inspect.signature(Squares.definition.fn)) == "(ctx: 'Context', *, n: 'int') -> 'None'"
    assert Squares.definition.arguments_fit([], {"n": 3}) is None
    assert Squares.definition.arguments_fit([], {"m": 3}) is not None


def test_keyset_parts_cover_every_row_once(db: Session) -> None:
    stmt = select(kv.c.a, kv.c.b)
    keys = [kv.c.a, kv.c.b]
    parts = enumerators.keyset_parts(db, stmt, keys, 4)
    assert parts[0]["after"] is None and parts[-1]["until"] is None and len(parts) == 4
    seen = []
    for part in parts:
        e = enumerators.rows(db, stmt, keys, batch_size=1, count=True, **part)
        got = [c for _, c in e]
        assert e.total == len(got) > 0
        seen += got
        if got[1:]:  # resuming inside a part stays inside it
            rest = [c for _, c in enumerators.rows(db, stmt, keys, got[0], **part)]
            assert rest == got[1:]
    assert seen == [[a, b] for a in (1, 2, 3) for b in ("x", "y")]
    assert enumerators.keyset_parts(db, stmt, keys, 10)[-1]["until"] is None  # more parts than rows
