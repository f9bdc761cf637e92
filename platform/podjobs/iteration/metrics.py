"""Iteration gauges for Prometheus, read from each pod's Redis at scrape time (by
`podjobs exporter` and `podjobs api`'s `/metrics`, beside podjobs.podmetrics):

- `podjobs_iteration_jobs{pod,state}`: the newest iteration jobs (up to LIMIT per pod) by
  state;
- `podjobs_iteration_items_done{pod,job,id}` and `podjobs_iteration_items_total` (when the
  enumerator knows it) for jobs not finished: running, interrupted, errored, paused.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from podjobs.backend import RedisBackend
from podjobs.iteration.admin import Iterations
from podjobs.iteration.state import State

log = logging.getLogger("podjobs.iteration.metrics")

#: most iteration jobs read per pod and scrape (newest first)
LIMIT = 200
_OPEN = (State.RUNNING, State.INTERRUPTED, State.ERRORED, State.PAUSED, State.CANCELLING)


class IterationCollector(Collector):
    def __init__(self, backends: Callable[[], Mapping[str, RedisBackend]]) -> None:
        self.backends = backends

    def collect(self) -> Iterator[Any]:
        states = GaugeMetricFamily("podjobs_iteration_jobs", "Iteration jobs by state (newest)",
                                   labels=["pod", "state"])
        done = GaugeMetricFamily("podjobs_iteration_items_done", "Items an iteration job has done",
                                 labels=["pod", "job", "id"])
        total = GaugeMetricFamily("podjobs_iteration_items_total", "Items an iteration job has",
                                  labels=["pod", "job", "id"])
        for pod, backend in sorted(self.backends().items()):
            try:
                jobs = Iterations(backend).jobs(limit=LIMIT)
            except Exception as exc:  # podjobs_pod_up says the pod is down
                log.warning("pod %s iterations unreadable for metrics: %s", pod, exc)
                continue
            for state, n in sorted(Counter(p.state.value for p in jobs).items()):
                states.add_metric([pod, state], n)
            for p in jobs:
                if p.state in _OPEN:
                    done.add_metric([pod, p.job, p.id], p.done)
                    if p.total is not None:
                        total.add_metric([pod, p.job, p.id], p.total)
        yield states
        yield done
        yield total
