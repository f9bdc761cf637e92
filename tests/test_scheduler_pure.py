"""Pure decisions of the migration rollout (scheduler/rollout.py): no servers."""

from __future__ import annotations

import pytest

from podjobs.scheduler.leader import fence_of
from podjobs.scheduler.rollout import ShardView, plan, wait_outcome, waves

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
    with pytest.raises(ValueError):
        wait_outcome(ORDER, [], {}, "zz")


def test_fence_is_the_lock_node_sequence_number() -> None:
    assert fence_of("/x/locks/p1/3f2a__lock__0000000042") == 42
    with pytest.raises(ValueError):
        fence_of("no-sequence")
