"""Pod-level gauges, read from each pod's Redis at scrape time: exported once per pod (by
the API server's `/metrics` and by `podjobs exporter`), never once per worker, so that a
sum over workers does not count a queue twice.

Series (label pod, and queue where it applies):

- `podjobs_pod_up`: 1 when the pod's Redis answered the scrape, else 0;
- `podjobs_queue_size`, `podjobs_queue_latency_seconds` (age of the oldest waiting job),
  `podjobs_scheduled_jobs`, `podjobs_retry_jobs`, `podjobs_in_flight_jobs`;
- `podjobs_dead_jobs`, `podjobs_workers` (live workers), `podjobs_workers_busy`.

A scrape reads the pods one after another with the short-timeout clients given to it; a
pod that does not answer is reported down and the others still are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from podjobs import keys
from podjobs.backend import RedisBackend
from podjobs.ops import Inspector

log = logging.getLogger("podjobs.podmetrics")

_QUEUE_GAUGES = (
    ("podjobs_queue_size", "Jobs waiting in the queue", "size"),
    ("podjobs_queue_latency_seconds", "Age of the oldest job waiting in the queue", "latency_s"),
    ("podjobs_scheduled_jobs", "Jobs scheduled for later", "scheduled"),
    ("podjobs_retry_jobs", "Jobs waiting for a retry", "retrying"),
    ("podjobs_in_flight_jobs", "Jobs reserved by workers", "in_flight"),
)


class PodCollector(Collector):
    """Pod gauges for the pods `backends()` names (pod -> a Redis client of that pod)."""

    def __init__(self, backends: Callable[[], Mapping[str, RedisBackend]]) -> None:
        self.backends = backends

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("podjobs_pod_up", "1 when the pod's Redis answered", labels=["pod"])
        queue = {name: GaugeMetricFamily(name, doc, labels=["pod", "queue"])
                 for name, doc, _ in _QUEUE_GAUGES}
        dead = GaugeMetricFamily("podjobs_dead_jobs", "Jobs in the dead set", labels=["pod"])
        workers = GaugeMetricFamily("podjobs_workers", "Live workers", labels=["pod"])
        busy = GaugeMetricFamily("podjobs_workers_busy", "Jobs running on live workers", labels=["pod"])
        for pod, backend in sorted(self.backends().items()):
            try:
                ins = Inspector(backend)
                qs = ins.queues()
                live = [w for w in ins.workers() if w.alive]
                n_dead = int(backend.redis.zcard(keys.DEAD))
            except Exception as exc:  # one pod down must not hide the others
                log.warning("pod %s unreadable for metrics: %s", pod, exc)
                up.add_metric([pod], 0)
                continue
            up.add_metric([pod], 1)
            for q in qs:
                for name, _, attr in _QUEUE_GAUGES:
                    queue[name].add_metric([pod, q.name], float(getattr(q, attr)))
            dead.add_metric([pod], n_dead)
            workers.add_metric([pod], len(live))
            busy.add_metric([pod], sum(len(w.busy) for w in live))
        yield up
        yield from queue.values()
        yield dead
        yield workers
        yield busy
