"""A pod's Redis behind Sentinel: the primary killed during a drain (issue 17 item 5).

`sentinel_failover` (and `sentinel_failover_wait`): tests/chaos/sentinel.py's group (1 primary,
1 replica, 3 sentinels); two workers and the enqueuer reach it only through the
`redis+sentinel://` URL. Half the jobs are enqueued in bulk, the workers start draining,
and after a third of them finished the primary is killed with SIGKILL while single enqueues
go on. The sentinels promote the replica (down-after 1 s); workers and the enqueuer find it
on their next connection. The ledger counts acknowledged jobs that never ran (lost: an
acknowledged write the replica never got) and jobs run twice (a reserve or ack the replica
never got: at-least-once allows it).

`_wait` adds `wait=1` to the URL and a second replica: an enqueue is acknowledged only once a
replica has it (Redis WAIT), so no acknowledged enqueue can be lost to the failover (the
sentinels promote the most up-to-date replica). With one replica, the promoted primary has
none left, and every such enqueue then waits wait_ms and fails ("may or may not").
"""

from __future__ import annotations

import logging
from pathlib import Path

from podjobs.backend import RedisBackend
from tests.chaos import app
from tests.chaos import ledger as ledger_mod
from tests.chaos.checker import Observation
from tests.chaos.harness import Harness
from tests.chaos.scenarios import Size
from tests.chaos.sentinel import SentinelGroup
from tests.helpers import wait_until

log = logging.getLogger(__name__)


def _failover(base: Path, size: Size, wait: bool) -> Observation:
    # with wait=1 a second replica: after the failover the new primary still has one
    with SentinelGroup(base / "sentinel", replicas=2 if wait else 1) as g:
        url = g.url + ("&wait=1&wait_ms=1000" if wait else "")
        with Harness(base, pod_urls=[g.primary_url()]) as h:
            backend = RedisBackend(url)
            n = max(300, size.jobs // 2)
            first = h.enqueue_many(app.work, n // 2, 0.005)
            for _ in range(2):
                h.spawn(url=url, concurrency=4)
            wait_until(lambda: ledger_mod.count(h.ledger_dir, "finish") >= n // 6, 60,
                       "a third of the first half drained")
            old = g.kill9_primary()
            acked = list(first)
            for _ in range(n - n // 2):
                jid = h.enqueue_one(app.work.call(0.005), backend=backend)
                if jid:
                    acked.append(jid)
            new = g.wait_failover(old, 30)
            h.pod_urls = [f"redis://127.0.0.1:{new}/0"]
            h.wait_finished(acked, size.timeout + 30)
            backend.close()
            obs = h.observe(allow_duplicates=True)
            refused = sum(1 for e in obs.events if e.kind == "enq" and not e.ok)
            log.warning("sentinel failover%s: %d acknowledged, %d refused during the failover "
                        "(not acknowledged)", " (wait=1)" if wait else "", len(acked), refused)
            return obs


def sentinel_failover(base: Path, size: Size) -> Observation:
    return _failover(base, size, wait=False)


def sentinel_failover_wait(base: Path, size: Size) -> Observation:
    return _failover(base, size, wait=True)
