"""Pure decisions of the migration rollout (scheduler/rollout.py): no servers."""

from __future__ import annotations

import pytest

from podjobs.scheduler.leader import fence_of
from podjobs.scheduler.rollout import ShardView, plan, wait_outcome, waves
from podjobs.scheduler.runstate import (
    TRANSITIONS,
    IllegalTransition,
    Run,
    RunState,
    allowed,
    check,
    new_run,
    transition,
)

ORDER = ["a", "b", "c"]


def sv(pod: str, current: str | None, known: bool = True, **runs: str) -> ShardView:
    return ShardView(pod, current, runs, known)


def test_waves_put_the_canary_first_then_the_rest_by_name_in_chunks() -> None:
    assert waves(["p3", "p1", "p2", "p4"], "p2", 2) == [["p2"], ["p1", "p3"], ["p4"]]
    assert waves(["p1", "p2"], None, 1) == [["p1"], ["p2"]]
    assert waves(["p1", "p2"], "p9", 5) == [["p1", "p2"]]
    with pytest.raises(ValueError):
        waves(["p1"], None, 0)


def test_only_the_canary_starts_a_revision_first() -> None:
    shards = [sv("p1", None), sv("p2", None), sv("p3", None)]
    assert plan(ORDER, shards, set(), "p2", 1) == [("p2", "a")]


def test_the_next_wave_starts_when_every_earlier_pod_completed_the_revision() -> None:
    shards = [sv("p1", None), sv("p2", "a", a="complete"), sv("p3", None)]
    # wave size 1: p1 is wave 1, p3 wave 2; p2 (canary) goes on with b meanwhile
    assert plan(ORDER, shards, set(), "p2", 1) == [("p1", "a"), ("p2", "b")]
    assert plan(ORDER, shards, set(), "p2", 2) == [("p1", "a"), ("p2", "b"), ("p3", "a")]


def test_one_at_a_time_per_shard_and_nothing_after_an_unfinished_revision() -> None:
    assert plan(ORDER, [sv("p1", None, a="queued")], set(), "p1", 1) == []
    assert plan(ORDER, [sv("p1", None, a="running")], set(), "p1", 1) == []
    # a applied but its backfill still running: b waits
    assert plan(ORDER, [sv("p1", "a", a="running")], set(), "p1", 1) == []
    # a failed after its schema step: b waits
    assert plan(ORDER, [sv("p1", "a", a="failed")], set(), "p1", 1) == []
    # applied before the scheduler existed (no record): b goes
    assert plan(ORDER, [sv("p1", "a")], set(), "p1", 1) == [("p1", "b")]


def test_halted_failed_unknown_and_finished_shards_get_nothing() -> None:
    assert plan(ORDER, [sv("p1", "a")], {"b"}, "p1", 1) == []
    assert plan(ORDER, [sv("p1", "a", b="failed")], set(), "p1", 1) == []
    assert plan(ORDER, [sv("p1", "a", b="cancelled")], set(), "p1", 1) == []
    assert plan(ORDER, [sv("p1", None, known=False)], set(), "p1", 1) == []
    assert plan(ORDER, [sv("p1", "c")], set(), "p1", 1) == []


def test_a_later_wave_waits_while_the_canary_is_unknown_or_unfinished() -> None:
    assert plan(ORDER, [sv("p1", None, known=False), sv("p2", None)], set(), "p1", 1) == []
    assert plan(ORDER, [sv("p1", "a", a="running"), sv("p2", None)], set(), "p1", 1) == []


def test_wait_outcome_done_failed_or_waiting() -> None:
    done = [sv("p1", "c"), sv("p2", "c", c="complete")]
    assert wait_outcome(ORDER, done, {}, "c") == ("done", [])
    assert wait_outcome(ORDER, [sv("p1", "c"), sv("p2", "a")], {}, "b") == ("waiting", [])
    assert wait_outcome(ORDER, [sv("p1", "c"), sv("p2", "a")], {}, "a") == ("done", [])
    out, why = wait_outcome(ORDER, [sv("p1", "c"), sv("p2", "a", b="failed")], {}, "c")
    assert out == "failed" and why == ["p2: b failed"]
    out, why = wait_outcome(ORDER, [sv("p1", "b"), sv("p2", "a")], {"b": "boom"}, "c")
    assert out == "failed" and why == ["p2: b halted (boom)"]
    # a failure after the target does not fail a wait for the target
    assert wait_outcome(ORDER, [sv("p1", "b", c="failed")], {"c": "x"}, "b") == ("done", [])
    # applied but the backfill still runs: waiting, not done
    assert wait_outcome(ORDER, [sv("p1", "b", b="running")], {}, "b") == ("waiting", [])
    # a revision the leader has not published yet (the old leader still leads): waited for
    out, why = wait_outcome(ORDER, [sv("p1", "c")], {}, "d")
    assert out == "unpublished" and why == ["d is not published by the leader yet (it knows a, b, c)"]
    assert wait_outcome([], [], {}, "a")[0] == "unpublished"


def test_fence_is_the_lock_node_sequence_number() -> None:
    assert fence_of("/x/locks/p1/3f2a__lock__0000000042") == 42
    with pytest.raises(ValueError):
        fence_of("no-sequence")


# -- a migration run's state machine (scheduler/runstate.py) ----------------------------

Q, R, C, F, X = (RunState.QUEUED, RunState.RUNNING, RunState.COMPLETE, RunState.FAILED,
                 RunState.CANCELLED)
NONE = None  # no record

#: every (from, to) of the machine in runstate's docstring; any other pair is refused
LEGAL = {
    (NONE, Q), (NONE, C),
    (Q, Q), (Q, R), (Q, C), (Q, F), (Q, X),
    (R, R), (R, C), (R, F), (R, X),
    (F, R), (F, C), (F, NONE),
    (X, R), (X, C), (X, NONE),
}
ALL: list[RunState | None] = [NONE, *RunState]


@pytest.mark.parametrize("src,dst", [(s, d) for s in ALL for d in ALL])
def test_the_transition_table_is_the_documented_machine(src: RunState | None,
                                                        dst: RunState | None) -> None:
    assert allowed(src, dst) == ((src, dst) in LEGAL)
    if (src, dst) in LEGAL:
        check(src, dst)
    else:
        with pytest.raises(IllegalTransition, match="is not a transition of a migration run"):
            check(src, dst)


def test_the_docstring_draws_exactly_the_table() -> None:
    import re

    import podjobs.scheduler.runstate as runstate

    names: dict[str, RunState | None] = {"(none)": None, **{s.value: s for s in RunState}}
    drawn = set()
    for line in (runstate.__doc__ or "").splitlines():
        m = re.match(r"\s*([a-z()| ]+?)\s+--.*-->\s*(\S+)", line)
        if m:
            drawn |= {(names[src.strip()], names[m.group(2)]) for src in m.group(1).split("|")}
    assert drawn == LEGAL == {(s, d) for s, ds in TRANSITIONS.items() for d in ds}


@pytest.mark.parametrize("src,dst,finished_before,finished_after", [
    (Q, R, None, None),            # opens: untouched
    (R, R, None, None),            # a backfill started
    (Q, C, None, 50.0),            # final: stamped
    (R, F, None, 50.0),
    (Q, X, None, 50.0),
    (F, R, 10.0, None),            # retry with a backfill: open again
    (X, C, 10.0, 50.0),            # skip
])
def test_transition_applies_the_state_finished_at_and_the_changes(
        src: RunState, dst: RunState, finished_before: float | None,
        finished_after: float | None) -> None:
    run = Run("p1", "a", src, finished_at=finished_before, version=3)
    out = transition(run, dst, now=50.0, error="boom", worker="w1")
    assert out is run
    assert (run.state, run.finished_at, run.error, run.worker) == (dst, finished_after,
                                                                   "boom", "w1")
    assert run.version == 3  # the store bumps it when it writes


@pytest.mark.parametrize("src,dst", [(C, R), (C, F), (F, X), (X, F), (R, Q), (F, F)])
def test_an_illegal_transition_is_refused_naming_the_run_and_changes_nothing(
        src: RunState, dst: RunState) -> None:
    run = Run("p2", "b", src, error="before")
    with pytest.raises(IllegalTransition) as exc:
        transition(run, dst, now=1.0, error="after")
    assert f"migration run b on p2: {src.value} -> {dst.value}" in str(exc.value)
    assert (run.state, run.error) == (src, "before")


def test_transition_refuses_fields_that_are_not_changeable() -> None:
    with pytest.raises(TypeError, match="pod"):
        transition(Run("p1", "a", Q), R, now=1.0, pod="p2")


def test_new_run_is_the_transition_out_of_no_record() -> None:
    run = new_run("p1", "a", Q, now=7.0, job_id="j1")
    assert (run.state, run.queued_at, run.finished_at, run.job_id) == (Q, 7.0, None, "j1")
    skipped = new_run("p1", "a", C, now=8.0, skipped=True)
    assert (skipped.finished_at, skipped.skipped) == (8.0, True)
    with pytest.raises(IllegalTransition, match=r"\(none\) -> running"):
        new_run("p1", "a", R, now=1.0)


def test_run_states_are_their_wire_strings() -> None:
    assert [s.value for s in RunState] == ["queued", "running", "complete", "failed",
                                           "cancelled"]
    run = Run("p1", "a", F, error="x")
    assert run.to_json()["state"] == "failed"
    assert Run.from_json(run.to_json(), 4).state is F
    assert Run.from_json({"pod": "p1", "revision": "a"}, 0).state is Q


# -- half-applied revisions (scheduler/applied.py) -------------------------------------


@pytest.mark.parametrize(("sql", "writes_"), [
    ("ALTER TABLE t ADD COLUMN x INT", True), ("  create index i on t (x)", True),
    ("INSERT INTO t VALUES (1)", True), ("UPDATE t SET x = 1", True),
    ("SELECT 1", False), ("select fail from mig_control", False), ("SHOW TABLES", False),
    ("SET SESSION lock_wait_timeout = 60", False), ("DO 0", False), ("WITH a AS (SELECT 1) SELECT * FROM a", False),
])
def test_only_statements_that_change_the_shard_are_recorded(sql: str, writes_: bool) -> None:
    from podjobs.scheduler.applied import writes

    assert writes(sql) is writes_


@pytest.mark.parametrize(("earlier", "resumable", "skip"), [
    ([], False, 0), ([], True, 0), (["ALTER TABLE t ADD x INT"], True, 1),
    (["INSERT ...", "ALTER TABLE t ADD x INT", "INSERT ..."], True, 3),
])
def test_plan_skips_what_a_resumable_revision_applied(earlier: list[str], resumable: bool,
                                                       skip: int) -> None:
    from podjobs.scheduler.applied import plan

    assert plan("r1", earlier, resumable) == skip


def test_plan_refuses_a_half_applied_revision_that_is_not_resumable() -> None:
    from podjobs.scheduler.applied import HalfApplied, plan

    with pytest.raises(HalfApplied, match=r"r1 is half applied .* 1 DDL statement\(s\) \(ALTER "
                                          r"TABLE t ADD x INT\).*migrations skip r1 --pod POD.*resumable"):
        plan("r1", ["INSERT INTO log VALUES (1)", "ALTER TABLE t\n   ADD x INT"], False)
    # only row writes applied: run again from the start, as before
    assert plan("r1", ["INSERT INTO log VALUES (1)"], False) == 0


# -- shard reads (scheduler/shardreads.py): when the leader reads a shard's revision --------

def _reading(at: float, known: bool = True, url: str = "u") -> object:
    from podjobs.scheduler.shardreads import Reading

    return Reading(url, at, known, "a" if known else None, "" if known else "boom")


@pytest.mark.parametrize("reading,url,changed,busy,now,expect", [
    (None, "u", False, False, 100.0, True),                      # never read
    (_reading(99.0), "u", False, False, 100.0, False),           # fresh, nothing changed: idle
    (_reading(99.0), "u", True, False, 100.0, True),             # its runs changed
    (_reading(99.0), "v", False, False, 100.0, True),            # its URL changed
    (_reading(99.0), "u", True, True, 100.0, False),             # a read under way: never two
    (None, "u", False, True, 100.0, False),
    (_reading(69.0), "u", False, False, 100.0, True),            # re-sync after RESYNC_S (30)
    (_reading(71.0), "u", False, False, 100.0, False),
    (_reading(97.0, known=False), "u", False, False, 100.0, True),   # failed: retry after 2 s
    (_reading(99.0, known=False), "u", False, False, 100.0, False),
])
def test_a_shard_is_read_only_when_due(reading: object, url: str, changed: bool, busy: bool,
                                       now: float, expect: bool) -> None:
    from podjobs.scheduler.shardreads import due

    assert due(reading, url, changed, busy, now) is expect  # type: ignore[arg-type]


def test_a_pass_waits_at_most_wait_s_for_a_shard_that_does_not_answer() -> None:
    import threading

    from podjobs.scheduler.shardreads import ShardReader

    release = threading.Event()
    calls: list[str] = []

    def read(url: str) -> str | None:
        calls.append(url)
        if url == "slow":
            release.wait(30)
        return "a"

    r = ShardReader(read, wait_s=1.0)
    try:
        got = r.readings({"p1": "fast", "p2": "slow"}, set())
        assert got["p1"].known and got["p1"].current == "a"
        assert got["p2"].pending and not got["p2"].known
        got = r.readings({"p1": "fast", "p2": "slow"}, {"p2"})  # still busy: not read twice
        assert calls.count("slow") == 1 and calls.count("fast") == 1
    finally:
        release.set()
        r.close()


def test_a_change_seen_while_its_shard_is_read_is_read_again_after_that_read() -> None:
    """The read under way may have started before the change (a revision completing): its
    answer is not the last word (before: the shard was read again only at the re-sync)."""
    import threading

    from podjobs.scheduler.shardreads import ShardReader

    release, second = threading.Event(), threading.Event()
    answers = iter(["a", "b"])

    def read(url: str) -> str | None:
        got = next(answers)
        if got == "a":
            release.wait(30)
        else:
            second.set()
        return got

    r = ShardReader(read, wait_s=0.01)
    try:
        r.readings({"p": "u"}, set())               # first read, held
        r.readings({"p": "u"}, {"p"})               # its runs changed meanwhile: no second read yet
        assert not second.is_set()
        release.set()
        for _ in range(500):                        # passes with nothing new changed
            if second.wait(0.02):
                break
            r.readings({"p": "u"}, set())
        assert second.is_set()
    finally:
        release.set()
        r.close()


_BARRIER_REVISION = '''"""waits for the other shard's revision"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    bind = op.get_bind()
    bind.info["barrier"].wait()
    op.create_table(bind.info["table"], sa.Column("id", sa.Integer, primary_key=True))
'''


def test_revisions_of_two_shards_run_at_the_same_time_in_one_process(tmp_path: object) -> None:
    """alembic's `op` is process-wide: `revisions.apply` hands each call to the calling
    thread's Operations, so two shards' upgrade() overlap (each waits for the other at a
    barrier: behind a process-wide lock, as before, the barrier breaks) and each `op` call
    acts on its own thread's connection."""
    import threading
    from pathlib import Path

    from sqlalchemy import create_engine, inspect, text

    from podjobs.scheduler.revisions import Revisions, apply, current_revision

    base = Path(str(tmp_path))
    (base / "mig" / "versions").mkdir(parents=True)
    (base / "mig" / "versions" / "0001_barrier.py").write_text(_BARRIER_REVISION)
    revs = Revisions(str(base / "mig"))
    barrier = threading.Barrier(2, timeout=20)
    errors: list[BaseException] = []
    engines = {t: create_engine(f"sqlite:///{base / t}.db") for t in ("left", "right")}

    def run(table: str) -> None:
        try:
            with engines[table].begin() as conn:
                conn.info.update(barrier=barrier, table=table)
                apply(conn, revs, "0001")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    for table, e in engines.items():
        with e.connect() as conn:
            assert inspect(conn).get_table_names() == sorted(["alembic_version", table])
            assert current_revision(conn) == "0001"
            assert conn.execute(text("SELECT 1")).scalar() == 1
        e.dispose()
