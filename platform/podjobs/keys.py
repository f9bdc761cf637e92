"""Every Redis key podjobs uses, built in this one module.

Lua scripts never build key names: callers pass them in KEYS. All keys of one
pod live in that pod's own Redis, under the prefix below.
"""

from __future__ import annotations

PREFIX = "pj:"

#: set of every queue name that was ever enqueued to (for operators and the poller)
QUEUES = PREFIX + "queues"
#: set of live worker ids (a worker is removed when it stops or is reaped)
WORKERS = PREFIX + "workers"
#: sorted set of dead jobs: score = time of death in ms, member = payload
DEAD = PREFIX + "dead"
#: set of the list keys (queue(name)) of paused queues: reserve passes them over
PAUSED = PREFIX + "paused"


def queue(name: str) -> str:
    """List of ready payloads. LPUSH at the head, RPOP from the tail (FIFO)."""
    return f"{PREFIX}q:{name}"


def tenant_queue(name: str, tenant: str) -> str:
    """List of one tenant's ready payloads in queue `name` (fair share, lua/include/fair.lua):
    LPUSH at the head, RPOP from the tail. The queue name is length-prefixed so that no
    pair of queue and tenant names can build another pair's key."""
    return f"{PREFIX}qt:{len(name)}:{name}:{tenant}"


def ring(name: str) -> str:
    """List of the ready lists of queue `name` that reserve takes from in turn (fair share):
    the tenant lists (tenant_queue) with jobs, and the queue's own list (queue(name)) while
    it has jobs and some tenant list has too. Empty = no tenant list has jobs: reserve reads
    queue(name) alone, as without fair share."""
    return f"{PREFIX}ring:{name}"


def wake(name: str) -> str:
    """List holding at most a token or two; idle workers BLPOP on it."""
    return f"{PREFIX}wake:{name}"


def scheduled(name: str) -> str:
    """Sorted set of payloads due later: score = due time in ms (Redis clock)."""
    return f"{PREFIX}sched:{name}"


def retry(name: str) -> str:
    """Sorted set of failed payloads waiting for their next attempt, score = due ms."""
    return f"{PREFIX}retry:{name}"


def inflight(worker_id: str, queue_name: str) -> str:
    """Hash job id -> payload of the jobs a worker reserved from one queue."""
    return f"{PREFIX}inflight:{worker_id}:{queue_name}"


def reservation(worker_id: str) -> str:
    """String: the request id of a worker's last reservation and the (queue index, job id)
    pairs it took, so that a reserve whose reply was lost can be asked again (replayed)."""
    return f"{PREFIX}rsv:{worker_id}"


def request(request_id: str) -> str:
    """String with a short TTL: the answer of an enqueue already made under this request id
    (the id of its first job), so that a re-send is refused as a duplicate."""
    return f"{PREFIX}req:{request_id}"


def outbox_sent(job_id: str) -> str:
    """String kept for a while once the outbox relay pushed job `job_id` (podjobs.transactional):
    a relay that pushes the same outbox row again writes nothing."""
    return f"{PREFIX}obx:{job_id}"


def heartbeat(worker_id: str) -> str:
    """String with a TTL: present while the worker is alive."""
    return f"{PREFIX}hb:{worker_id}"


def worker_info(worker_id: str) -> str:
    """Hash describing a worker (host, pid, queues, concurrency, busy jobs)."""
    return f"{PREFIX}worker:{worker_id}"


def unique(job_name: str, digest: str) -> str:
    """String holding the id of the job that owns a unique enqueue key."""
    return f"{PREFIX}unique:{job_name}:{digest}"


def stat(name: str) -> str:
    """Counter: processed, failed, dead, recovered."""
    return f"{PREFIX}stat:{name}"


def status(job_id: str) -> str:
    """Hash with the state of a tracked job (used by status monitors)."""
    return f"{PREFIX}status:{job_id}"


def held(tenant: str) -> str:
    """Hash job id -> payload of a tenant being moved here, held until the move ends."""
    return f"{PREFIX}held:{tenant}"


def held_due(tenant: str) -> str:
    """Hash job id -> [kind, due ms] of held jobs that a move carried from a scheduled
    ("sched") or retry ("retry") set: released back into that set at that time."""
    return f"{PREFIX}helddue:{tenant}"


def moving(tenant: str) -> str:
    """String present on a pod while a move of the tenant involves it (the move id)."""
    return f"{PREFIX}moving:{tenant}"


def carry(tenant: str) -> str:
    """Hash job id -> [kind, queue, score, payload]: jobs taken off a pod by a move (the
    source) or its rollback (the destination), not yet written to the other pod."""
    return f"{PREFIX}carry:{tenant}"


def move_acks(tenant: str) -> str:
    """Hash worker id -> directory version: workers that stopped running the tenant's jobs."""
    return f"{PREFIX}moveack:{tenant}"


def periodic(job_name: str, tick: int) -> str:
    """String (job id, with a TTL) present once a periodic job's cron tick was enqueued."""
    return f"{PREFIX}periodic:{job_name}:{tick}"


#: hash job id -> tenant: jobs enqueued under a pending cap that have not started yet
PENDING = PREFIX + "pending"
#: hash tenant -> number of its jobs in PENDING
PENDING_COUNT = PREFIX + "pendingn"


def rate(tenant: str) -> str:
    """Hash (tokens, ms): the tenant's enqueue-rate token bucket on this pod."""
    return f"{PREFIX}rate:{tenant}"
