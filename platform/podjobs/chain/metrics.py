"""Job metrics: a link of the middleware chain that counts every delivery a worker settles,
exported in Prometheus' format (prometheus-client) by the worker's `--metrics-port`.

Series (labels: pod, queue, job; no tenant label, for cardinality):

- `podjobs_jobs_total{outcome}`: succeeded, retried, dead, reenqueued, unfinished,
  forwarded, held;
- `podjobs_jobs_dead_total{reason}`: the dead set's reasons (retries_exhausted, ...);
- `podjobs_job_duration_seconds`: how long runs took (a histogram);
- `podjobs_job_wait_seconds`: enqueue to start of first runs (a histogram; the enqueuer's
  clock against the worker's);
- `podjobs_worker_busy` / `podjobs_worker_concurrency`: jobs running now, and slots;
- opt-in (`--metrics-top-tenants N`): `podjobs_tenant_jobs_total{tenant}` for the N tenants
  with the most deliveries on this worker (the only series with a tenant label).

With process isolation the parent's chain settles its children's jobs: they count here.

Cost: the hot path takes no lock. Each executor thread keeps its own tallies (plain dicts
and lists, touched only by that thread); a scrape sums them (`JobCollector`). A link that
only has `after_settle` leaves a plain success on the batched fast path (no Settlement
is made for it).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from podjobs.delivery import Delivery
from podjobs.invoke import Outcome
from podjobs.jobs import JobDef
from podjobs.middleware import Middleware
from podjobs.settlement import Kind, Settlement

#: upper bounds of the histograms' buckets, seconds
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0, 1800.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
                3600.0, 21600.0)


#: the outcomes counted, in the order of a row's first cells
OUTCOMES = ("succeeded", "unfinished", "retried", "dead", "reenqueued", "forwarded", "held")
_INDEX = {Kind.RETRY: 2, Kind.DEAD: 3, Kind.REENQUEUE: 4, Kind.FORWARD: 5, Kind.HOLD: 6}
#: a row: outcome counts, duration buckets (+Inf last) and sum, wait buckets and sum
_DUR = len(OUTCOMES)
_DUR_SUM = _DUR + len(DURATION_BUCKETS) + 1
_WAIT = _DUR_SUM + 1
_WAIT_SUM = _WAIT + len(WAIT_BUCKETS) + 1
_ROW = _WAIT_SUM + 1


class _Tally:
    """One executor thread's counts (only that thread writes them)."""

    __slots__ = ("rows", "dead", "tenants")

    def __init__(self) -> None:
        #: tenant -> deliveries settled (only with a top-N tenant view)
        self.tenants: dict[str, int] = {}
        #: (queue, job) -> a row (see _ROW)
        self.rows: dict[tuple[str, str], list[float]] = {}
        #: (queue, job, reason) -> count
        self.dead: dict[tuple[str, str, str], int] = {}


class JobMetrics(Middleware):
    """The metrics link (see the module docstring)."""

    def __init__(self, top_tenants: int = 0) -> None:
        #: export the N tenants with the most deliveries (0: no tenant series at all)
        self.top_tenants = top_tenants
        self._local = threading.local()
        self._tallies: list[_Tally] = []
        self._lock = threading.Lock()

    def _tally(self) -> _Tally:
        t = _Tally()
        self._local.t = t
        with self._lock:
            self._tallies.append(t)
        return t

    def after_settle(self, d: Delivery, jd: JobDef, out: Outcome | None,
                     s: Settlement | None) -> None:
        if s is None:
            if out is None:
                return  # not run (reaped meanwhile): nothing happened to count
            i = 0
        elif s.kind is Kind.ACK:
            i = 0 if s.finished else 1
        elif s.kind is Kind.NONE:
            return
        else:
            i = _INDEX[s.kind]
        try:
            t: _Tally = self._local.t
        except AttributeError:
            t = self._tally()
        key = (d.queue, jd.name if jd.name != "podjobs.unknown" else d.job)
        row = t.rows.get(key)
        if row is None:
            row = t.rows[key] = [0.0] * _ROW
        row[i] += 1
        if self.top_tenants and d.tenant is not None:
            t.tenants[d.tenant] = t.tenants.get(d.tenant, 0) + 1
        if i == 3 and s is not None:
            dkey = (key[0], key[1], s.reason)
            t.dead[dkey] = t.dead.get(dkey, 0) + 1
        if out is not None:
            row[_DUR + bisect_left(DURATION_BUCKETS, out.duration)] += 1
            row[_DUR_SUM] += out.duration
            if d.attempt == 1 and d.enqueued_at:
                wait = time.time() - d.enqueued_at / 1000
                if wait < 0:
                    wait = 0.0
                row[_WAIT + bisect_left(WAIT_BUCKETS, wait)] += 1
                row[_WAIT_SUM] += wait

    def tallies(self) -> list[_Tally]:
        with self._lock:
            return list(self._tallies)


def _sum_rows(tallies: list[_Tally]) -> dict[tuple[str, str], list[float]]:
    out: dict[tuple[str, str], list[float]] = {}
    for t in tallies:
        for k, row in list(t.rows.items()):
            acc = out.get(k)
            if acc is None:
                out[k] = list(row)
            else:
                for i, v in enumerate(row):
                    acc[i] += v
    return out


def _sum_counts(dicts: list[dict[Any, int]]) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for dd in dicts:
        for k, v in list(dd.items()):
            out[k] = out.get(k, 0) + v
    return out


def _hist_family(name: str, doc: str, pod: str, rows: dict[tuple[str, str], list[float]],
                 bounds: tuple[float, ...], first: int) -> HistogramMetricFamily:
    """A histogram from the rows' cells `first` ... (buckets, +Inf, sum)."""
    fam = HistogramMetricFamily(name, doc, labels=["pod", "queue", "job"])
    for (queue, job), row in sorted(rows.items()):
        cells = row[first : first + len(bounds) + 2]
        if not any(cells[:-1]):
            continue
        cum = 0.0
        buckets = []
        for b, n in zip(bounds, cells[: len(bounds)], strict=True):
            cum += n
            buckets.append((repr(b), cum))
        cum += cells[len(bounds)]
        buckets.append(("+Inf", cum))
        fam.add_metric([pod, queue, job], buckets, cells[-1])
    return fam


class JobCollector(Collector):
    """Sums a worker's tallies at each scrape (prometheus_client custom collector)."""

    def __init__(self, metrics: JobMetrics, pod: str, busy: Callable[[], int] = lambda: 0,
                 concurrency: int = 0) -> None:
        self.metrics = metrics
        self.pod = pod
        self.busy = busy
        self.concurrency = concurrency

    def collect(self) -> Iterator[Any]:
        tallies = self.metrics.tallies()
        rows = _sum_rows(tallies)
        jobs = CounterMetricFamily("podjobs_jobs", "Deliveries settled, by outcome",
                                   labels=["pod", "queue", "job", "outcome"])
        for (queue, job), row in sorted(rows.items()):
            for i, outcome in enumerate(OUTCOMES):
                if row[i]:
                    jobs.add_metric([self.pod, queue, job, outcome], row[i])
        yield jobs
        dead = CounterMetricFamily("podjobs_jobs_dead", "Jobs moved to the dead set, by reason",
                                   labels=["pod", "queue", "job", "reason"])
        for (queue, job, reason), n in sorted(_sum_counts([t.dead for t in tallies]).items()):
            dead.add_metric([self.pod, queue, job, reason], n)
        yield dead
        if self.metrics.top_tenants:
            per = _sum_counts([t.tenants for t in tallies])
            top = sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))[: self.metrics.top_tenants]
            fam = CounterMetricFamily("podjobs_tenant_jobs", "Deliveries settled for the busiest "
                                      "tenants (the top N of this worker)", labels=["pod", "tenant"])
            for tenant, n in top:
                fam.add_metric([self.pod, tenant], n)
            yield fam
        yield _hist_family("podjobs_job_duration_seconds", "Run time of jobs", self.pod, rows,
                           DURATION_BUCKETS, _DUR)
        yield _hist_family("podjobs_job_wait_seconds", "Enqueue to start of first runs", self.pod,
                           rows, WAIT_BUCKETS, _WAIT)
        busy = GaugeMetricFamily("podjobs_worker_busy", "Jobs this worker runs now", labels=["pod"])
        busy.add_metric([self.pod], self.busy())
        yield busy
        slots = GaugeMetricFamily("podjobs_worker_concurrency", "Jobs this worker can run at once",
                                  labels=["pod"])
        slots.add_metric([self.pod], self.concurrency)
        yield slots
