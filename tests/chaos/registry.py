"""Every chaos scenario: its name, fault class, function, whether the quick subset (`make
test`) runs it, and, for one the current code fails, a strict xfail naming its issue (none
today: each issue-11 scenario failed before its fix and passes since).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.chaos import cluster_scenarios as cs
from tests.chaos import effects_scenarios as es
from tests.chaos import ha_scenarios as hs
from tests.chaos import move_scenarios as ms
from tests.chaos import outbox_scenarios as os_
from tests.chaos import scenarios as ws
from tests.chaos import shard_scenarios as ss
from tests.chaos import zk_ensemble_scenarios as zs


@dataclass(frozen=True)
class Spec:
    name: str
    fault: str
    fn: Callable[..., Any]
    quick: bool = True
    xfail: str | None = None
    #: False only for a race the scenario provokes but cannot force every run
    strict: bool = True
    cluster: bool = False  # needs the session's ZooKeeper and MariaDB shards


SPECS: list[Spec] = [
    Spec("worker_kill9_thread", "kill -9 worker", ws.worker_kill9_thread),
    Spec("worker_kill9_process", "kill -9 worker", ws.worker_kill9_process),
    # `worker --processes 2`: the supervisor replaces each killed worker
    Spec("supervised_worker_kill9", "kill -9 worker", ws.supervised_worker_kill9),
    # before the fix of issue 11 item 1: 0-29 re-runs per run (a race on which thread wakes
    # first after SIGCONT)
    # issue 19: the SQL backend (lease expiry instead of the heartbeat key)
    Spec("sql_sqlite_worker_kill9", "kill -9 worker", ws.sql_sqlite_worker_kill9),
    Spec("sql_mariadb_worker_kill9", "kill -9 worker", cs.sql_mariadb_worker_kill9, cluster=True),
    Spec("worker_sigstop_zombie", "SIGSTOP worker", ws.worker_sigstop_zombie),
    Spec("worker_sigstop_zombie_process", "SIGSTOP worker", ws.worker_sigstop_zombie_process,
         quick=False),
    Spec("worker_sigterm_thread", "SIGTERM worker", ws.worker_sigterm_thread),
    Spec("worker_sigterm_process", "SIGTERM worker", ws.worker_sigterm_process),
    Spec("redis_kill9_aof", "kill -9 Redis", ws.redis_kill9_aof),
    Spec("redis_down_past_ttl", "Redis down", ws.redis_down_past_ttl),
    Spec("poison_entries", "poisoned entries", ws.poison_entries),
    Spec("proxy_enqueue_reply_dropped", "lost reply", ws.proxy_enqueue_reply_dropped),
    Spec("proxy_reserve_reply_dropped", "lost reply", ws.proxy_reserve_reply_dropped),
    Spec("zk_frozen", "SIGSTOP ZooKeeper", cs.zk_frozen, cluster=True),
    Spec("scheduler_leader_kill9", "kill -9 scheduler", cs.scheduler_leader_kill9,
         cluster=True),
    Spec("scheduler_leader_sigstop", "SIGSTOP scheduler", cs.scheduler_leader_sigstop,
         quick=False, cluster=True),
    # issue 18: transactional enqueue, the outbox relay killed (first between push and delete)
    Spec("outbox_relay_kill9", "kill -9 relay", os_.outbox_relay_kill9, cluster=True),
    # issue 18: tenants moved while their jobs sit in the old pod's outbox and its relays die
    Spec("outbox_move_relay_kill9", "kill -9 relay", os_.outbox_move_relay_kill9, cluster=True),
    # issue 18: ctx.once charges on a MariaDB shard, workers killed after a commit before
    # the ack and at random: exactly one charge per job. The control without ctx.once must
    # fail (charges done twice), so the check is shown able to fail
    Spec("once_charge_kill9", "kill -9 worker", es.once_charge_kill9, cluster=True),
    Spec("once_charge_kill9_without_once", "kill -9 worker", es.once_charge_kill9_without_once,
         quick=False, cluster=True,
         xfail="control: without ctx.once a job re-run after its commit charges twice"),
    # issue 17 item 3: before, the leader hung on the dead shard and ran no periodic tick
    Spec("shard_blackholed", "blackholed shard", ss.shard_blackholed, cluster=True),
    # issue 17 item 5: the directory on a three-server ZooKeeper ensemble, a follower then the
    # leader killed while routed enqueues, two tenant moves and a rollout go on
    Spec("zk_ensemble_kill9", "kill -9 ZooKeeper", zs.zk_ensemble_kill9, quick=False,
         cluster=True),
    # issue 17 item 5: the pod's Redis behind Sentinel, its primary killed mid-drain. Before:
    # connections that reconnected by themselves went back to the dead primary (quick: 220 of
    # 299 lost), and the group started its drain before the replica's first sync had ended
    # (a replica promoted empty: 51 of 299 lost); both fixed (gateway._FollowingConnection,
    # _using; SentinelGroup waits for the replica's link)
    Spec("sentinel_failover", "kill -9 primary", hs.sentinel_failover),
    Spec("sentinel_failover_wait", "kill -9 primary", hs.sentinel_failover_wait, quick=False),
    # issue 11 item 8, tenant moves: kill -9 of `podjobs tenants move` at each crash point
    # (pods/crashpoints.py), then --resume or --rollback; the quick subset runs one
    *[Spec(f"move_kill9_{point}_{then}", "kill -9 mover", ms.scenario(point, then),
           quick=(point, then) == ms.QUICK, cluster=True)
      for point in ms.POINTS for then in ms.THEN],
]
