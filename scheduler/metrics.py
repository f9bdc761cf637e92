"""Scheduler gauges, read from ZooKeeper at scrape time (by the API server's `/metrics` and
`podjobs exporter`, which see every shard; see podjobs.podmetrics for the pods' queues):

- `podjobs_scheduler_leader`: 1 with the leading scheduler's id as label (none: no leader),
  and `podjobs_scheduler_term`, its term;
- `podjobs_migration_pending{pod}`: revisions the shard has not applied yet;
- `podjobs_migration_runs{pod,revision,state}`: 1 for each open or stopped run (queued,
  running, failed, cancelled), so an alert can fire on a failed one;
- `podjobs_migration_halts`: revisions halted for the whole rollout;
- `podjobs_periodic_last_tick_timestamp_seconds{job,target}`: each periodic job's last tick.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from podjobs.pods.zk import ZK

from .report import collect

log = logging.getLogger("podjobs.scheduler.metrics")


class MigrationCollector(Collector):
    def __init__(self, zk: ZK) -> None:
        self.zk = zk

    def collect(self) -> Iterator[Any]:
        try:
            status = collect(self.zk)
        except Exception as exc:  # ZooKeeper down: no scheduler series this scrape
            log.warning("migration status unreadable for metrics: %s", exc)
            return
        leader = GaugeMetricFamily("podjobs_scheduler_leader", "The leading scheduler (1)",
                                   labels=["id"])
        term = GaugeMetricFamily("podjobs_scheduler_term", "The leader's term (fence number)")
        info = status.get("leader") or {}
        if info:
            leader.add_metric([str(info.get("id", "?"))], 1)
            if isinstance(info.get("term"), int):
                term.add_metric([], info["term"])
        yield leader
        yield term
        pending = GaugeMetricFamily("podjobs_migration_pending", "Revisions a shard has not applied",
                                    labels=["pod"])
        runs = GaugeMetricFamily("podjobs_migration_runs", "Open or stopped migration runs",
                                 labels=["pod", "revision", "state"])
        for shard in status["shards"]:
            pending.add_metric([shard["pod"]], len(shard["pending"]))
            for run in [*shard["running"], *shard["failures"]]:
                runs.add_metric([shard["pod"], str(run["revision"]), str(run["state"])], 1)
        yield pending
        yield runs
        halts = GaugeMetricFamily("podjobs_migration_halts", "Revisions halted for the rollout")
        halts.add_metric([], len(status.get("halts") or {}))
        yield halts
        yield self._periodic()

    def _periodic(self) -> GaugeMetricFamily:
        """The last tick of each periodic job and target, from the leader's state nodes
        (periodic/{job}/{target}: {"last_tick"}), so an alert can fire on one that stopped."""
        fam = GaugeMetricFamily("podjobs_periodic_last_tick_timestamp_seconds",
                                "When a periodic job last ran (its tick, epoch seconds)",
                                labels=["job", "target"])
        base = self.zk.path("periodic")
        for job in sorted(self.zk.children(base)):
            for target in sorted(self.zk.children(f"{base}/{job}")):
                got = self.zk.get_json(f"{base}/{job}/{target}")
                last = got[0].get("last_tick") if got else None
                if isinstance(last, int | float):
                    fam.add_metric([job.replace("%2F", "/"), target], float(last))
        return fam
