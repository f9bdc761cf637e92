"""The chaos checker (tests/chaos/checker.py) from tables of hand-written histories."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chaos.checker import Observation, check
from tests.chaos.ledger import Event


def enq(i: str, ok: bool = True) -> Event:
    return Event("enq", i, ok=ok)


def start(i: str, pid: int, t: float, amo: bool = False, ov: bool = False,
          worker: str = "") -> Event:
    return Event("start", i, pid=pid, mono=t, amo=amo, overlap=ov, worker=worker)


def fin(i: str, pid: int, t: float, amo: bool = False) -> Event:
    return Event("finish", i, pid=pid, mono=t, amo=amo)


def walled(e: Event, wall: float) -> Event:
    return Event(e.kind, e.job_id, pid=e.pid, mono=e.mono, wall=wall)


CASES: list[tuple[str, list[Event], dict[str, Any], dict[str, int], str]] = [
    ("clean", [enq("a"), start("a", 1, 1), fin("a", 1, 2)], {},
     {"acknowledged": 1, "lost": 0, "twice": 0}, "PASS"),
    ("lost", [enq("a"), enq("b"), start("a", 1, 1), fin("a", 1, 2)], {},
     {"lost": 1}, "FAIL"),
    ("a failed enqueue that never ran is not lost", [enq("a", ok=False)], {},
     {"acknowledged": 0, "lost": 0}, "PASS"),
    ("a failed enqueue that ran is not unexpected", [enq("a", ok=False), start("a", 1, 1),
                                                     fin("a", 1, 2)], {}, {"unexpected": 0}, "PASS"),
    ("unexpected", [start("z", 1, 1), fin("z", 1, 2)], {}, {"unexpected": 1}, "FAIL"),
    ("killed mid-job, re-run: a duplicate at-least-once admits",
     [enq("a"), start("a", 1, 1), fin("a", 1, 2), start("a", 2, 3), fin("a", 2, 4)],
     {"allow_duplicates": True}, {"twice": 1, "overlapping": 0}, "PASS"),
    ("a re-run whose effect is done once (ctx.once)",
     [enq("a"), enq("b"), start("a", 1, 1), fin("a", 1, 2), start("a", 2, 3), fin("a", 2, 4),
      start("b", 2, 5), fin("b", 2, 6)],
     {"allow_duplicates": True, "effects": {"a": 1, "b": 1}},
     {"twice": 1, "effect_twice": 0, "effect_missing": 0}, "PASS"),
    ("an effect done twice, and one never done",
     [enq("a"), enq("b"), start("a", 1, 1), fin("a", 1, 2), start("b", 1, 3), fin("b", 1, 4)],
     {"effects": {"a": 2}}, {"effect_twice": 1, "effect_missing": 1}, "FAIL"),
    ("the same duplicate where the fault admits none",
     [enq("a"), start("a", 1, 1), fin("a", 1, 2), start("a", 2, 3), fin("a", 2, 4)], {},
     {"twice": 1}, "FAIL"),
    ("overlap from intervals", [enq("a"), start("a", 1, 1), start("a", 2, 2), fin("a", 1, 3),
                                fin("a", 2, 4)], {"allow_duplicates": True},
     {"overlapping": 1}, "FAIL"),
    ("overlap from the ledger's lock (the first run never finished)",
     [enq("a"), start("a", 1, 1), start("a", 2, 2, ov=True), fin("a", 2, 3)],
     {"allow_duplicates": True}, {"overlapping": 1, "twice": 0}, "FAIL"),
    ("overlap a paused worker admits", [enq("a"), start("a", 1, 1), start("a", 2, 2, ov=True),
                                        fin("a", 2, 3), fin("a", 1, 4)],
     {"allow_duplicates": True, "allow_overlap": True}, {"overlapping": 1}, "PASS"),
    ("at_most_once cut off: neither lost nor twice", [enq("o"), start("o", 1, 1, amo=True)],
     {}, {"lost": 0, "amo_twice": 0}, "PASS"),
    ("at_most_once never started is lost", [enq("o")], {}, {"lost": 1}, "FAIL"),
    ("at_most_once twice", [enq("o"), start("o", 1, 1, amo=True), fin("o", 1, 2, amo=True),
                            start("o", 2, 3, amo=True), fin("o", 2, 4, amo=True)],
     {"allow_duplicates": True}, {"amo_twice": 1}, "FAIL"),
    ("stranded: in flight in both snapshots, not running", [enq("a")],
     {"inflight_first": frozenset({"a"}), "inflight_last": frozenset({"a"})},
     {"stranded": 1, "lost": 1}, "FAIL"),
    ("in flight once only: not stranded", [enq("a"), start("a", 1, 1), fin("a", 1, 2)],
     {"inflight_first": frozenset({"a"}), "inflight_last": frozenset()}, {"stranded": 0}, "PASS"),
    ("in flight and running in a live process: not stranded", [enq("a"), start("a", 7, 1)],
     {"inflight_first": frozenset({"a"}), "inflight_last": frozenset({"a"}),
      "alive_pids": frozenset({7})}, {"stranded": 0, "lost": 1}, "FAIL"),
    ("zombie re-run after resume", [enq("a"), start("a", 2, 1), fin("a", 2, 2),
                                    start("a", 9, 5, worker="z"), fin("a", 9, 6)],
     {"allow_duplicates": True, "zombie_reaped": {"z": 4.0}},
     {"zombie_reruns": 1}, "FAIL"),
    ("zombie finishing what it ran before the pause", [enq("a"), start("a", 9, 1, worker="z"),
                                                       start("a", 2, 2), fin("a", 2, 3),
                                                       fin("a", 9, 5)],
     {"allow_duplicates": True, "allow_overlap": True, "zombie_reaped": {"z": 4.0}},
     {"zombie_reruns": 0, "twice": 1}, "PASS"),
    ("a start decided before the pause, recorded after the resume: cut off, not a re-run",
     [enq("a"), Event("start", "a", pid=9, mono=5, worker="z", claimed=3.0), fin("a", 9, 6)],
     {"zombie_reaped": {"z": 4.0}}, {"zombie_reruns": 0}, "PASS"),
    ("a start decided after the resume under the reaped id: a re-run",
     [enq("a"), Event("start", "a", pid=9, mono=5, worker="z", claimed=4.5), fin("a", 9, 6)],
     {"zombie_reaped": {"z": 4.0}}, {"zombie_reruns": 1}, "FAIL"),
    ("the zombie's next generation runs what it reserved after the resume",
     [enq("a"), start("a", 9, 5, worker="z.2"), fin("a", 9, 6)],
     {"zombie_reaped": {"z": 4.0}}, {"zombie_reruns": 0}, "PASS"),
    ("slow exit", [], {"exit_times": [1.2, 7.5], "exit_limit": 6.0}, {}, "FAIL"),
    ("exits in time", [], {"exit_times": [1.2, 5.9], "exit_limit": 6.0}, {}, "PASS"),
    ("poison: one malformed dead-set write each", [Event("poison", "p1"), Event("poison", "p2")],
     {"dead_writes": 2, "dead_malformed": 2}, {"poison": 2, "poison_bad": 0}, "PASS"),
    ("poison: written twice, wrong reason", [Event("poison", "p1")],
     {"dead_writes": 2, "dead_malformed": 0}, {"poison": 1}, "FAIL"),
    ("poison that ran", [Event("poison", "p1"), start("p1", 1, 1), fin("p1", 1, 2)],
     {"dead_writes": 1, "dead_malformed": 1}, {"unexpected": 0, "poison_bad": 1}, "FAIL"),
    ("held forever after a move", [enq("a"), enq("b"), start("a", 1, 1), fin("a", 1, 2)],
     {"held": frozenset({"b"})}, {"held": 1, "lost": 1}, "FAIL"),
    ("runs on the pod the tenant was placed on at the time",
     [enq("a"), enq("b"), walled(start("a", 1, 1), 10.0), fin("a", 1, 2),
      walled(start("b", 2, 3), 30.0), fin("b", 2, 4)],
     {"pod_of_pid": {1: "p1", 2: "p2"}, "placement": [(0.0, "p1"), (20.0, None), (25.0, "p2")]},
     {"misplaced": 0}, "PASS"),
    ("a run on the old pod after the fence, one on the new pod before the flip",
     [enq("a"), enq("b"), walled(start("a", 1, 1), 21.0), fin("a", 1, 2),
      walled(start("b", 2, 3), 24.0), fin("b", 2, 4)],
     {"pod_of_pid": {1: "p1", 2: "p2"}, "placement": [(0.0, "p1"), (20.0, None), (25.0, "p2")]},
     {"misplaced": 2}, "FAIL"),
    ("a note from the scenario", [], {"notes": ["the rollback exited 1"]}, {}, "FAIL"),
]


@pytest.mark.parametrize(("events", "facts", "want", "verdict"),
                         [pytest.param(e, f, w, v, id=n) for n, e, f, w, v in CASES])
def test_checker(events: list[Event], facts: dict[str, Any], want: dict[str, int],
                 verdict: str) -> None:
    report = check(Observation(events=events, **facts))
    for k, v in want.items():
        assert getattr(report, k) == v, (k, report)
    assert report.verdict == verdict, report.failures
