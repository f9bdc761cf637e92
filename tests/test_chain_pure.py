"""The middleware chain's decisions, from tables, without servers: which hooks a job
definition and delivery shape pass through (and in which order), and how each core link
shapes a settlement."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

import podjobs
from podjobs.acker import Acker
from podjobs.chain import AtMostOnce, FollowUps, JobLog, Retries, Tracking, worker_chain
from podjobs.delivery import FOLLOWUPS, TENANT, TRACKED, UNIQUE, Delivery
from podjobs.invoke import Failure, Outcome, failed
from podjobs.iteration.unfinished import IterationUnfinished
from podjobs.jobs import JobDef, JobOptions
from podjobs.middleware import Middleware, Plan
from podjobs.payload import BadPayload, dumps, open_delivery
from podjobs.settlement import Kind, Settlement


def _noop() -> None:
    pass


PLAIN = JobDef("t.plain", _noop, JobOptions(retries=2))
ONCE = JobDef("t.once", _noop, JobOptions(delivery=podjobs.DeliveryMode.AT_MOST_ONCE))
ID = "0" * 26


def delivery(**extra: Any) -> Delivery:
    data: dict[str, Any] = {"id": ID, "job": "t.plain", "queue": "q", "args": [1], "kwargs": {},
                            "enqueued_at": 5, "attempt": 0, **extra}
    return open_delivery(dumps(data), "q", "w1")


class _Acker:
    """Only what Tracking calls: the buffered starts."""

    def __init__(self) -> None:
        self.starts: list[tuple[Any, ...]] = []

    def started(self, *a: Any) -> None:
        self.starts.append(a)


def chain() -> list[Middleware]:
    return worker_chain(cast(Any, None), cast(Acker, _Acker()))


def names(hooks: tuple[Any, ...]) -> list[str]:
    return [type(h.__self__).__name__ for h in hooks]


@pytest.mark.parametrize(("jd", "extra", "before_start", "on_failure", "before_settle", "plain"), [
    (PLAIN, {}, [], ["Retries"], [], True),
    (PLAIN, {"track": 60}, ["Tracking"], ["Retries"], ["Tracking"], False),
    (PLAIN, {"unique": "pj:u:x"}, [], ["Retries"], ["FollowUps"], False),
    (ONCE, {}, ["AtMostOnce"], ["AtMostOnce"], [], True),
    (ONCE, {"track": 60}, ["AtMostOnce", "Tracking"], ["AtMostOnce"], ["Tracking"], False),
])
def test_plan_chooses_hooks_once_in_order(jd: JobDef, extra: dict[str, Any], before_start: list[str],
                                          on_failure: list[str], before_settle: list[str],
                                          plain: bool) -> None:
    d = delivery(**extra)
    plan = Plan([m for m in chain() if not isinstance(m, IterationUnfinished | JobLog)], jd, d.shape)
    assert names(plan.before_start) == before_start  # outermost first
    assert names(plan.on_failure) == on_failure  # inner first
    assert names(plan.before_settle) == before_settle
    assert plan.plain is plain


def test_hooks_a_class_does_not_override_are_never_called() -> None:
    class OnlyStart(Middleware):
        def before_start(self, d: Delivery, jd: JobDef) -> Settlement | None:
            return None

    plan = Plan([OnlyStart()], PLAIN, 0)
    assert len(plan.before_start) == 1
    assert not (plan.on_success or plan.on_failure or plan.before_settle or plan.after_settle)
    assert plan.plain


@pytest.mark.parametrize(("extra", "shape"), [
    ({}, 0), ({"track": 1}, TRACKED), ({"then": [{"id": ID, "job": "j", "queue": "q"}]}, FOLLOWUPS),
    ({"unique": "k"}, UNIQUE), ({"tenant": "t"}, TENANT), ({"tenant": "t", "track": 1}, TENANT | TRACKED),
])
def test_delivery_shape(extra: dict[str, Any], shape: int) -> None:
    d = delivery(**extra)
    assert d.shape == shape
    assert (d.id, d.job, d.queue, d.args, d.attempt, d.owner, d.in_flight) == (ID, "t.plain", "q", [1], 1, "w1", True)


def test_open_delivery_refuses_a_bad_field() -> None:
    with pytest.raises(BadPayload, match="'attempt'"):
        delivery(attempt="1")


def _failure(failure: Failure) -> Outcome:
    return failed(failure, "ValueError", "boom")


def _dead(d: Delivery, out: Outcome) -> Settlement:
    return Settlement(Kind.DEAD, d.id, reason=out.failure.value if out.failure else "", error=out.error_dict())


@pytest.mark.parametrize(("attempt", "failure", "kind", "reason"), [
    (0, Failure.ERROR, Kind.RETRY, ""),
    (1, Failure.TIMEOUT, Kind.RETRY, ""),
    (2, Failure.ERROR, Kind.DEAD, "retries_exhausted"),  # third run of retries=2
    (0, Failure.ARGUMENTS, Kind.DEAD, "arguments"),
    (0, Failure.REFUSED, Kind.DEAD, "refused"),
])
def test_retries(attempt: int, failure: Failure, kind: Kind, reason: str) -> None:
    d = delivery(attempt=attempt)
    out = _failure(failure)
    s = Retries().on_failure(d, PLAIN, out, _dead(d, out))
    assert (s.kind, s.reason) == (kind, reason)
    if kind is Kind.RETRY:
        nxt = json.loads(s.payload)
        assert nxt["attempt"] == attempt + 1 and nxt["error"]["class"] == "ValueError"
        assert s.delay_ms > 0


@pytest.mark.parametrize(("failure", "reason"), [
    (Failure.ERROR, "at_most_once_failed"), (Failure.CRASH, "at_most_once_failed"),
    (Failure.ARGUMENTS, "arguments"),
])
def test_at_most_once_failures_are_dead(failure: Failure, reason: str) -> None:
    d = delivery()
    out = _failure(failure)
    s = AtMostOnce(cast(Any, None)).on_failure(d, ONCE, out, _dead(d, out))
    assert (s.kind, s.reason) == (Kind.DEAD, reason)


@pytest.mark.parametrize(("finished", "state", "children", "unique"), [
    (True, "", 1, "k"), (False, "paused", 0, None), (False, "cancelled", 0, "k"),
])
def test_followups_and_unique_on_success(finished: bool, state: str, children: int,
                                         unique: str | None) -> None:
    d = delivery(unique="k", then=[{"id": "1" * 26, "job": "j", "queue": "q2", "args": [], "kwargs": {}}])
    s = Settlement(Kind.ACK, d.id, finished=finished, reason=state)
    out = Outcome(True, None, unfinished=state)
    for link in (IterationUnfinished(), FollowUps()):  # inner first
        s = link.on_success(d, PLAIN, out, s)
    assert (len(s.children), s.unique) == (children, unique)
    assert s.batched() is (children == 0 and unique is None)


def test_a_dead_job_releases_its_unique_key() -> None:
    d = delivery(unique="k")
    s = FollowUps().before_settle(d, PLAIN, Settlement(Kind.DEAD, d.id, reason="unknown_job"))
    assert s.unique == "k"


@pytest.mark.parametrize(("s", "state"), [
    (Settlement(Kind.ACK, ID, result=3), "succeeded"),
    (Settlement(Kind.ACK, ID, finished=False, reason="cancelled"), "cancelled"),
    (Settlement(Kind.RETRY, ID, error={"class": "E", "message": "m", "trace": ""}), "retrying"),
    (Settlement(Kind.REENQUEUE, ID, reason="deferred"), "queued"),
    (Settlement(Kind.DEAD, ID, reason="retries_exhausted", error={}), "failed"),
    (Settlement(Kind.DEAD, ID, reason="unknown_job", error={}), "dead"),
    (Settlement(Kind.FORWARD, ID, pod="p2"), "queued"),
])
def test_tracking_writes_the_state_of_each_kind(s: Settlement, state: str) -> None:
    d = delivery(track=60)
    s = Tracking(cast(Acker, _Acker())).before_settle(d, PLAIN, s)
    assert s.status is not None and json.loads(s.status.fields)["state"] == state


def test_tracking_buffers_the_start_with_the_owner() -> None:
    acker = _Acker()
    d = delivery(track=60)
    assert Tracking(cast(Acker, acker)).before_start(d, PLAIN) is None
    (queue, jid, in_flight, st, owner), = acker.starts
    assert (queue, jid, in_flight, owner) == ("q", ID, True, "w1")
    assert json.loads(st.fields)["state"] == "running"
