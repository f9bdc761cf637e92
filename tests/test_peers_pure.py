"""bench/peers.py's table maths: advantage, percentile, pairing with podjobs neighbours."""

from __future__ import annotations

import pytest

from bench.peers import advantage, best_peer, paired_ratios, percentile


@pytest.mark.parametrize(("pj", "peer", "higher", "want"), [
    (200.0, 100.0, True, 2.0),    # twice the throughput
    (50.0, 100.0, True, 0.5),
    (1.0, 2.0, False, 2.0),       # half the latency
    (4.0, 2.0, False, 0.5),
])
def test_advantage(pj: float, peer: float, higher: bool, want: float) -> None:
    assert advantage(pj, peer, higher) == pytest.approx(want)


@pytest.mark.parametrize(("values", "q", "want"), [
    ([3.0, 1.0, 2.0], 50, 2.0),
    (list(range(1, 201)), 99, 198),
    (list(range(1, 201)), 100, 200),
    ([7.0], 99, 7.0),
])
def test_percentile_nearest_rank(values: list[float], q: float, want: float) -> None:
    assert percentile(values, q) == want


def test_each_peer_pairs_with_the_podjobs_runs_either_side() -> None:
    seq = [("podjobs", 100.0), ("huey", 50.0), ("podjobs", 300.0), ("rq", 400.0), ("podjobs", 500.0)]
    ratios = paired_ratios(seq, higher_is_better=True)
    # huey: podjobs runs 100, 300 (and 500, three places on) -> median 300
    assert ratios == {"huey": pytest.approx(300 / 50), "rq": pytest.approx(300 / 400)}
    assert best_peer(ratios) == ("rq", pytest.approx(0.75))


def test_one_podjobs_run_caught_by_a_load_spike_does_not_decide_a_ratio() -> None:
    seq = [("podjobs", 1.0), ("a", 1.0), ("podjobs", 1.0), ("b", 2.0), ("podjobs", 40.0),
           ("c", 1.0), ("podjobs", 1.0)]
    ratios = paired_ratios(seq, higher_is_better=False)  # seconds: lower is better
    assert ratios["b"] == pytest.approx(2.0)  # podjobs 1, 1, 40, 1 -> median 1
    assert ratios["c"] == pytest.approx(1.0)


def test_missing_figures_pair_with_what_is_there() -> None:
    seq = [("podjobs", None), ("huey", 2.0), ("podjobs", 1.0), ("arq", None), ("podjobs", 1.0)]
    assert paired_ratios(seq, higher_is_better=False) == {"huey": pytest.approx(2.0)}
    assert best_peer({}) is None


@pytest.mark.parametrize(("per_core", "cores", "want"), [
    (True, 2, 300.0),    # one command already runs a process per core (Dramatiq, Celery prefork)
    (True, 8, 300.0),
    (False, 2, 550.0),   # one process a command: two commands on two cores
    (False, 4, None),    # two commands are not one per core there: no figure
])
def test_machine_drain_compares_a_process_per_core(per_core: bool, cores: int,
                                                   want: float | None) -> None:
    from bench.peers import machine_drain

    res = {"drain_steady_per_s": 300.0, "drain_steady_2_per_s": 550.0}
    assert machine_drain(res, per_core, cores) == want
