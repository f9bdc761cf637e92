"""Fair share inside a pod: how a queue's ready jobs are laid out in Redis (read side).

With fair share on (the default), a tenant's jobs due now wait in the tenant's own list
(`keys.tenant_queue`), and reserve takes one job from each list in the queue's ring
(`keys.ring`) in turn; the queue's own list (`keys.queue`) holds jobs without a tenant and
every job that comes back to ready (retries, recovered, scheduled, given back), and joins the
ring as one more member (lua/include/fair.lua). Across queues the priority stays strict.

Everything that counts or lists a queue's ready jobs goes through `ready_lists` /
`ready_depths` here, never `LLEN pj:q:NAME` alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from podjobs import keys

ENV = "PODJOBS_FAIR_SHARE"


def fair_share_default() -> bool:
    """On unless $PODJOBS_FAIR_SHARE is 0/false/off/no."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def ready_lists(r: Any, queue: str) -> list[str]:
    """The keys of every list holding `queue`'s ready jobs: its own list first, then the
    tenant lists in its ring."""
    plain = keys.queue(queue)
    members = [_text(m) for m in r.lrange(keys.ring(queue), 0, -1)]
    return [plain, *(m for m in members if m != plain)]


def ready_depths(r: Any, queues: Sequence[str]) -> list[tuple[int, list[bytes]]]:
    """Per queue: (number of ready jobs, the oldest payload of each of its ready lists). Two
    pipelined round trips (a gauge: not one atomic reading)."""
    if not queues:
        return []
    pipe = r.pipeline(transaction=False)
    for q in queues:
        pipe.lrange(keys.ring(q), 0, -1)
    rings = pipe.execute()
    lists = []
    for q, members in zip(queues, rings, strict=True):
        plain = keys.queue(q)
        lists.append([plain, *(m for m in (_text(x) for x in members) if m != plain)])
    pipe = r.pipeline(transaction=False)
    for ls in lists:
        for k in ls:
            pipe.llen(k)
            pipe.lindex(k, -1)
    got = iter(pipe.execute())
    out = []
    for ls in lists:
        n = 0
        tails: list[bytes] = []
        for _ in ls:
            size, tail = next(got), next(got)
            n += int(size)
            if tail is not None:
                tails.append(tail)
        out.append((n, tails))
    return out


def ready_count(r: Any, queue: str) -> int:
    """How many jobs of `queue` are ready (its own list and its tenants' lists)."""
    return ready_depths(r, [queue])[0][0]


def ready_jobs(r: Any, queue: str) -> list[bytes]:
    """Every ready payload of `queue` (as stored): its own list's, then each tenant list's,
    each newest first."""
    out: list[bytes] = []
    for key in ready_lists(r, queue):
        out += r.lrange(key, 0, -1)
    return out
