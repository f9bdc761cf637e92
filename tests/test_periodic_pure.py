"""Periodic jobs without servers: the decorator, cron checks and the tick logic."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

import podjobs
from podjobs import cron as pc
from podjobs.cron import (
    Decision,
    choose_pod,
    count_ticks,
    decide,
    latest_tick,
    marker_ttl,
    next_tick,
)
from podjobs.errors import ConfigurationError


def ts(s: str) -> int:
    """Epoch seconds of an ISO time in UTC ("2024-01-01T00:05:00")."""
    return int(datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp())


@pytest.fixture
def clean_registry() -> Iterator[None]:
    before = set(pc.registered())
    yield
    for name in set(pc.registered()) - before:
        pc.unregister(name)


# -- cron helpers --------------------------------------------------------------------------


def test_latest_and_next_tick_are_utc_and_inclusive_at_a_tick() -> None:
    cron = "*/5 * * * *"
    assert latest_tick(cron, ts("2024-01-01T00:05:00")) == ts("2024-01-01T00:05:00")
    assert latest_tick(cron, ts("2024-01-01T00:05:00") + 0.999) == ts("2024-01-01T00:05:00")
    assert latest_tick(cron, ts("2024-01-01T00:04:59") + 0.9) == ts("2024-01-01T00:00:00")
    assert next_tick(cron, ts("2024-01-01T00:05:00")) == ts("2024-01-01T00:10:00")
    assert next_tick(cron, ts("2024-01-01T00:04:59.5")) == ts("2024-01-01T00:05:00")
    # hours are UTC hours, whatever the machine's zone
    assert latest_tick("0 9 * * *", ts("2024-06-01T10:00:00")) == ts("2024-06-01T09:00:00")


def test_a_sixth_field_is_seconds() -> None:
    cron = "* * * * * */10"
    assert latest_tick(cron, ts("2024-01-01T00:00:25")) == ts("2024-01-01T00:00:20")
    assert next_tick(cron, ts("2024-01-01T00:00:20")) == ts("2024-01-01T00:00:30")


def test_count_ticks_counts_the_half_open_interval_and_stops_at_the_limit() -> None:
    cron = "* * * * *"
    a = ts("2024-01-01T00:00:00")
    assert count_ticks(cron, a, a) == 0
    assert count_ticks(cron, a, a + 60) == 1
    assert count_ticks(cron, a, a + 600) == 10
    assert count_ticks(cron, a, a + 86400, limit=50) == 50


# -- decide -----------------------------------------------------------------------------


CRON = "*/5 * * * *"
T0 = ts("2024-01-01T00:00:00")


def test_first_sight_remembers_the_latest_tick_and_enqueues_nothing() -> None:
    d = decide(CRON, None, T0 + 7, "skip", 60)
    assert d == Decision(None, 0, T0)
    assert d.first_sight


def test_nothing_due_keeps_the_state() -> None:
    assert decide(CRON, T0, T0 + 299.9) == Decision(None, 0, T0)
    # a clock that went back changes nothing either
    assert decide(CRON, T0 + 300, T0 + 10) == Decision(None, 0, T0 + 300)


@pytest.mark.parametrize("catch_up", ["skip", "once"])
def test_one_tick_due_on_time_is_enqueued(catch_up: str) -> None:
    d = decide(CRON, T0, T0 + 300.4, catch_up, 60)
    assert (d.enqueue, d.missed, d.last_tick, d.due) == (T0 + 300, 0, T0 + 300, 1)
    assert d.late == pytest.approx(0.4)


def test_skip_runs_the_latest_of_several_due_ticks_within_grace() -> None:
    d = decide(CRON, T0, T0 + 3 * 300 + 20, "skip", 60)
    assert (d.enqueue, d.missed, d.last_tick, d.due) == (T0 + 900, 2, T0 + 900, 3)


def test_skip_runs_nothing_when_the_latest_tick_is_past_grace() -> None:
    d = decide(CRON, T0, T0 + 3 * 300 + 61, "skip", 60)
    assert (d.enqueue, d.missed, d.last_tick, d.due) == (None, 3, T0 + 900, 3)
    # also when that late tick is the only one due
    d = decide(CRON, T0, T0 + 300 + 61, "skip", 60)
    assert (d.enqueue, d.missed, d.last_tick) == (None, 1, T0 + 300)


def test_once_runs_the_latest_tick_however_late() -> None:
    d = decide(CRON, T0, T0 + 12 * 300 + 299, "once", 60)
    assert (d.enqueue, d.missed, d.last_tick, d.due) == (T0 + 3600, 11, T0 + 3600, 12)
    assert d.late == 299


def test_the_state_after_a_decision_yields_nothing_more_until_the_next_tick() -> None:
    d = decide(CRON, T0, T0 + 950, "once", 60)
    assert d.last_tick is not None
    assert decide(CRON, d.last_tick, T0 + 950).enqueue is None
    assert decide(CRON, d.last_tick, T0 + 1200).enqueue == T0 + 1200


def test_irregular_schedule_weekdays_only() -> None:
    cron = "0 9 * * 1-5"  # 09:00 UTC on weekdays; 2024-01-05 is a Friday
    fri = ts("2024-01-05T09:00:00")
    d = decide(cron, fri, ts("2024-01-08T09:00:30"), "skip", 60)
    assert (d.enqueue, d.missed) == (ts("2024-01-08T09:00:00"), 0)  # the weekend has no ticks
    assert marker_ttl(cron, fri) == 2 * 3 * 86400  # the gap to Monday, twice
    assert marker_ttl("* * * * * *", fri) == pc.MARKER_TTL_MIN


def test_choose_pod_sticks_to_the_recorded_pod_while_it_is_active() -> None:
    assert choose_pod(None, ["p2", "p1", "p3"]) == "p1"
    assert choose_pod("p3", ["p1", "p2", "p3"]) == "p3"
    assert choose_pod("p3", ["p2", "p1"]) == "p1"
    assert choose_pod("p1", []) is None


# -- the decorator ------------------------------------------------------------------------


def test_periodic_registers_a_job_and_a_spec(clean_registry: None) -> None:
    @podjobs.periodic("*/5  * * * *", per_pod=True, catch_up="once", grace=5, queue="low",
                      name="pure.every5", retries=2)
    def every5(ctx: podjobs.Context) -> str:
        return "ran"

    assert isinstance(every5, podjobs.JobDef)
    assert (every5.name, every5.options.queue, every5.options.retries) == ("pure.every5", "low", 2)
    spec = pc.registered()["pure.every5"]
    assert (spec.cron, spec.per_pod, spec.catch_up, spec.grace) == ("*/5 * * * *", True, "once", 5.0)
    assert spec.job is every5
    assert every5() == "ran"  # still an ordinary job


def test_periodic_on_an_existing_job_and_a_job_class(clean_registry: None) -> None:
    @podjobs.job(name="pure.existing", queue="critical")
    def existing() -> None: ...

    assert pc.periodic("0 * * * *")(existing) is existing
    assert pc.registered()["pure.existing"].job.options.queue == "critical"

    @pc.periodic("0 3 * * *", per_pod=True)
    class Nightly(podjobs.Job):
        job_name = "pure.nightly"

        def perform(self, ctx: podjobs.Context) -> None: ...

    assert pc.registered()["pure.nightly"].job is Nightly.definition
    with pytest.raises(ConfigurationError, match="takes no job options"):
        pc.periodic("0 * * * *", queue="low")(existing)


@pytest.mark.parametrize("bad", ["61 * * * *", "* * *", "", "every day", "0 0 30 2 *"])
def test_a_bad_cron_expression_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(f"cron expression {bad!r}")):
        podjobs.periodic(bad)


def test_bad_options_are_refused(clean_registry: None) -> None:
    with pytest.raises(ConfigurationError, match="catch_up='all'"):
        podjobs.periodic("* * * * *", catch_up="all", name="pure.bad1")(lambda: None)
    with pytest.raises(ConfigurationError, match="grace=-1"):
        podjobs.periodic("* * * * *", grace=-1, name="pure.bad2")(lambda: None)

    def needs_args(ctx: podjobs.Context, shop_id: int) -> None: ...

    with pytest.raises(ConfigurationError, match="callable without arguments"):
        podjobs.periodic("* * * * *", name="pure.bad3")(needs_args)
    assert not {"pure.bad1", "pure.bad2", "pure.bad3"} & set(pc.registered())
