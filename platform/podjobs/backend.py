"""The queue backend: the small interface workers and enqueuers use, and its
Redis implementation (one Redis per pod).

1. `Backend` is the interface (enqueue, reserve, ack a batch, `settle` one delivery as a
   typed podjobs.settlement.Settlement, recover and the few helpers around them); job code
   and the worker only see this.
2. `RedisBackend` implements it on the Redis gateway (`podjobs.gateway.Gateway`: pools,
   the one Lua loader with its includes, `run`, `errors`) with one Lua script per state
   change (`lua/*.lua`), so every transition is one round trip; it also holds the typed
   state changes and reads of tenant moves (hold, carry, release, move acks ...).
3. Redis errors become `BackendUnavailable` naming the server and what to do
   (`BackendTimeout` when a command was sent but not answered: it may have run).
4. A state-changing script is sent again after a dropped connection only because each is
   safe to repeat: enqueue is refused as a duplicate by its request marker (the first job's
   id), reserve replays its reservation by request id, and the settle scripts act only on
   a job still in the worker's in-flight hash. The scripts run on a connection pool of
   their own without redis-py's retries, so podjobs knows whether anything was sent:
   an error after a send says "may or may not", one that never got through says "nothing
   was changed".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import redis
from redis.commands.core import Script as RedisScript

from podjobs import keys
from podjobs.errors import ConfigurationError
from podjobs.fairshare import fair_share_default
from podjobs.gateway import RETRIES, UNREACHABLE, Gateway, never_sent, redacted, script, text
from podjobs.ids import new_id
from podjobs.payload import inflight_field as request_id
from podjobs.settlement import Kind, Settlement
from podjobs.status import PENDING_TTL_S, StatusWrite

if TYPE_CHECKING:  # the quota module loads on a quota's first use, not with every worker
    from podjobs.quota import Quota, TenantQuota, Usage

#: most jobs kept in the dead set, and their maximum age (6 months), like Sidekiq
DEAD_MAX_JOBS = 10_000
DEAD_MAX_AGE_MS = 180 * 24 * 3600 * 1000
#: most payloads per enqueue script call (a bulk enqueue is split in chunks)
ENQUEUE_CHUNK = 10_000
#: most jobs one reserve call takes (Lua's unpack limit is about 8,000 values)
MAX_RESERVE = 1000
#: milliseconds an enqueue's request marker is kept (a re-send within it is a duplicate)
REQUEST_MARKER_MS = 30_000
#: how long the outbox relay's sent marker of a job is kept (a day: far past any relay restart)
OUTBOX_MARKER_MS = 86_400_000

_SAFE_POLICIES = ("noeviction",)


class Backend(Protocol):
    """What a queue backend must do. All times are on the backend's clock."""

    url: str

    def enqueue(
        self,
        queue: str,
        payloads: Sequence[str],
        *,
        delay_ms: int | None = None,
        at_ms: int | None = None,
        unique: tuple[str, int, str] | None = None,
        status: StatusWrite | None = None,
        quota: TenantQuota | None = None,
        tenant: str | None = None,
    ) -> int: ...

    def reserve(self, worker_id: str, queues: Sequence[str], n: int,
                request_id: str = "") -> list[tuple[str, bytes]] | None: ...

    def ack(self, worker_id: str, acks: Mapping[str, Sequence[str]],
            starts: Sequence[tuple[str, str, bool, StatusWrite]] = (),
            tracked: Mapping[str, Sequence[tuple[str, bool, StatusWrite]]] | None = None) -> int: ...

    def settle(self, worker_id: str, queue: str, s: Settlement) -> bool: ...

    def recover(self, worker_id: str, queues: Sequence[str], force: bool = False) -> int: ...

    def requeue(self, worker_id: str, queue: str, items: Sequence[tuple[str, str | bytes]]) -> int: ...

    def promote(self, queues: Sequence[str], limit: int = 1000) -> int: ...

    def heartbeat(self, worker_id: str, ttl_ms: int, first: bool, info: Mapping[str, str]) -> bool: ...

    def reserve_after_wait(self, worker_id: str, queues: Sequence[str], n: int, request_id: str,
                           timeout_s: float) -> list[tuple[str, bytes]] | None: ...

    def dead_worker_ids(self) -> list[tuple[str, list[str]]]: ...

    def close(self) -> None: ...

    def release_connection(self) -> None:
        """The calling thread makes no more calls for a while: let another thread use the
        connection it keeps (nothing to do where threads keep none)."""
        ...

    def hold(self, tenant: str, queue: str, items: Sequence[tuple[str, str]],
             status: StatusWrite | None = None) -> bool: ...


@runtime_checkable
class StatusStore(Protocol):
    """A backend that keeps tracked jobs' status records (podjobs.status): Redis and SQL."""

    def status_record(self, job_id: str) -> dict[str, str]: ...

    def cancel(self, job_id: str, queue: str, tenant: str | None, unique_key: str | None,
               ttl_s: int) -> tuple[str, str]: ...


def open_backend(kind: str, redis_url: str, database_url: str, *, check: bool = True) -> Backend:
    """A pod's queue backend by kind: "redis" (its Redis at `redis_url`) or "sql" (tables in
    its database at `database_url`, podjobs.sqlbackend)."""
    if kind == "sql":
        from podjobs.sqlbackend import SqlBackend

        return SqlBackend(database_url)
    if kind != "redis":
        raise ConfigurationError(f"queue backend {kind!r} is not one of redis, sql")
    return RedisBackend(redis_url, check=check)


def _add_status(ks: list[str], args: list[str | int], status: StatusWrite | None) -> None:
    """Append a tracked job's status key and (fields, TTL) to a script call."""
    if status is not None:
        ks.append(status.key)
        args += (status.fields, status.ttl_s)


class RedisBackend(Gateway):
    """The Redis implementation of `Backend` for one pod (its transport: `Gateway`)."""

    #: the queue's scripts called through redis-py's Script (the acker's batch, the bulk
    #: enqueue's MULTI); every other script is sent by name with `run`

    def __init__(self, url: str, *, check: bool = True, socket_timeout: float = 10.0,
                 connect_timeout: float = 5.0, fair_share: bool | None = None,
                 retries: int = RETRIES) -> None:
        super().__init__(url, socket_timeout=socket_timeout, connect_timeout=connect_timeout,
                         retries=retries)
        #: redis-py Script objects, registered on first use (a worker needs few of them)
        self._registered: dict[str, RedisScript] = {}
        #: enqueue a tenant's jobs into its own list, taken in turn with the other tenants'
        #: (README "Fair share"); off: into the queue's list (FIFO across tenants). Reserve
        #: reads both ways whatever this says. Default: on unless PODJOBS_FAIR_SHARE=0.
        self.fair_share = fair_share_default() if fair_share is None else fair_share
        if check:
            self.check()

    def _script(self, name: str) -> RedisScript:
        got = self._registered.get(name)
        if got is None:
            got = self._registered.setdefault(name, self.redis.register_script(script(name).text))
        return got

    def check(self) -> None:
        """Ping, and refuse a Redis that may evict keys (jobs would vanish).

        Asked on the scripts' pool first, so the connection it opens is the one this thread's
        scripts use next (a worker's start-up opens one connection, not two); a refused or
        dropped connection is asked again through the retrying client."""
        with self.errors("connect"):
            try:
                info = self._once.info("memory")
            except UNREACHABLE:
                info = self.redis.info("memory")
        policy = str(info.get("maxmemory_policy", "noeviction"))
        if policy not in _SAFE_POLICIES:
            raise ConfigurationError(
                f"Redis at {redacted(self.url)} has maxmemory-policy {policy!r}, which may evict "
                f"queued jobs; podjobs needs 'noeviction'. Set it with "
                f"'redis-cli CONFIG SET maxmemory-policy noeviction' and in redis.conf"
            )

    # -- enqueue --------------------------------------------------------------------

    def enqueue(
        self,
        queue: str,
        payloads: Sequence[str],
        *,
        delay_ms: int | None = None,
        at_ms: int | None = None,
        unique: tuple[str, int, str] | None = None,
        status: StatusWrite | None = None,
        quota: TenantQuota | None = None,
        tenant: str | None = None,
    ) -> int:
        """Push payloads to `queue` now, after `delay_ms`, or at `at_ms`.

        `unique` = (key, ttl_ms, owner job id): nothing is written while the key is held.
        `status`: the status record of a tracked job (one payload), written in the same step.
        `quota`: the tenant's limits, checked in the same step (`QuotaExceeded`, nothing
        written, when over one; see podjobs.quota).
        `tenant`: the jobs' tenant; with fair share on, jobs due now wait in the tenant's own
        list and reserve takes tenants in turn (lua/include/fair.lua).
        Returns how many payloads were written.
        """
        if delay_ms is not None:
            when, ms = "in", delay_ms
        elif at_ms is not None:
            when, ms = "at", at_ms
        else:
            when, ms = "now", 0
        ukey, uttl, owner = unique if unique else (keys.QUEUES, 0, "")
        ks = [keys.queue(queue), keys.wake(queue), keys.QUEUES, keys.scheduled(queue), ukey,
              keys.request(request_id(payloads[0]) if payloads else "none")]
        spec = ""
        if status is not None:
            if len(payloads) != 1:
                raise ValueError("a tracked enqueue carries one job")
            ks.append(status.key)
        else:
            ks.append(ks[0])
        if tenant is not None and self.fair_share:
            ks += (keys.tenant_queue(queue, tenant), keys.ring(queue))
        if quota is not None:
            spec = quota.spec()
            ks += (keys.rate(quota.tenant), keys.PENDING, keys.PENDING_COUNT)
        if status is not None:
            return self._written(quota, self.run("enqueue", "enqueue", ks, [
                queue, when, ms, uttl, owner, status.fields, status.ttl_s, REQUEST_MARKER_MS, spec,
                payloads[0]]))
        if len(payloads) <= ENQUEUE_CHUNK:
            return self._written(quota, self.run("enqueue", "enqueue", ks, [
                queue, when, ms, uttl, owner, "", 0, REQUEST_MARKER_MS, spec, *payloads]))
        if unique:
            raise ValueError("a unique enqueue carries one job")
        if quota is not None:
            raise ConfigurationError(
                f"tenant {quota.tenant!r} has a quota and this enqueue carries {len(payloads)} "
                f"jobs; a tenant with a quota enqueues at most {ENQUEUE_CHUNK} at once "
                f"(the quota is checked in one step): split the batch")
        written = 0
        pipe = self._once.pipeline(transaction=True)  # all chunks or none
        for i in range(0, len(payloads), ENQUEUE_CHUNK):
            chunk = payloads[i : i + ENQUEUE_CHUNK]
            ks[5] = keys.request(request_id(chunk[0]))
            self._script("enqueue")(keys=ks, args=[queue, when, ms, 0, "", "", 0, REQUEST_MARKER_MS,
                                                    "", *chunk], client=pipe)
        try:
            results = pipe.execute()
        except redis.ConnectionError as exc:
            with self.errors("enqueue", not never_sent(exc)):
                raise
        except redis.RedisError:
            with self.errors("enqueue", True):
                raise
        for n in results:
            written += int(n)
        return written

    def quota_usage(self, quotas: Mapping[str, Quota]) -> list[Usage]:
        """How near these tenants (tenant -> its quota on this pod) are to their limits: their
        pending counts and token buckets, read in one round trip (nothing written)."""
        from podjobs.quota import Usage, tokens_now

        names = sorted(quotas)
        if not names:
            return []
        with self.errors("read quota usage"):
            pipe = self.redis.pipeline(transaction=False)
            pipe.time()
            pipe.hmget(keys.PENDING_COUNT, names)
            for t in names:
                pipe.hmget(keys.rate(t), ["t", "ms"])
            got = pipe.execute()
        sec, usec = got[0]
        now = int(sec) * 1000 + int(usec) // 1000
        counts = got[1]
        out = []
        for i, t in enumerate(names):
            q = quotas[t]
            tok, ms = got[2 + i]
            tokens = (tokens_now(q, None if tok is None else float(tok),
                                 None if ms is None else int(ms), now)
                      if q.rate is not None else None)
            out.append(Usage(t, None, q, int(counts[i] or 0), tokens))
        return out

    @staticmethod
    def _written(quota: TenantQuota | None, answer: Any) -> int:
        """The enqueue script's answer: the count written, or its quota refusal raised."""
        if isinstance(answer, list):
            from podjobs.quota import refusal

            assert quota is not None
            raise refusal(quota, answer)
        return int(answer)

    def outbox_push(self, queue: str, items: Sequence[tuple[str, int, str]],
                    marker_ms: int = OUTBOX_MARKER_MS) -> int:
        """The outbox relay's push: (job id, due epoch ms or 0, payload) in order, each written
        unless its sent marker (keys.outbox_sent, kept `marker_ms`) says it was before. Safe to
        send again. Returns how many were written."""
        ks = [keys.queue(queue), keys.wake(queue), keys.QUEUES, keys.scheduled(queue),
              *(keys.outbox_sent(jid) for jid, _, _ in items)]
        args: list[str | int] = [queue, marker_ms]
        for _, due, payload in items:
            args += (due, payload)
        return int(self.run("outbox_push", "push outbox jobs", ks, args, repeatable=True))

    def outbox_claim(self, job_ids: Sequence[str], owner: str,
                     marker_ms: int = OUTBOX_MARKER_MS) -> list[bool]:
        """A tenant move's claim on outbox jobs of this pod (lua/outbox_claim.lua): per job,
        True when the move owns it (its sent marker set to `owner` now or before: a relay
        pushing it later writes nothing), False when a relay pushed it already. Safe to ask
        again with the same owner."""
        if not job_ids:
            return []
        ks = [keys.outbox_sent(jid) for jid in job_ids]
        got = self.run("outbox_claim", "claim outbox jobs for a move", ks, [marker_ms, owner],
                       repeatable=True)
        return [bool(int(f)) for f in got]

    # -- worker side ----------------------------------------------------------------

    def reserve(self, worker_id: str, queues: Sequence[str], n: int,
                request_id: str = "") -> list[tuple[str, bytes]] | None:
        """Reserve up to n jobs in priority order; None when this worker was reaped.

        `request_id`: fresh for each reservation; asked again with the same id after an
        error (a lost reply), it answers the jobs that request took, still in flight, and
        takes no more (see reserve.lua)."""
        flat = self.run("reserve", "reserve jobs", *self._reserve_call(worker_id, queues, n, request_id))
        return self._reserved(queues, flat)

    def reserve_after_wait(self, worker_id: str, queues: Sequence[str], n: int, request_id: str,
                           timeout_s: float) -> list[tuple[str, bytes]] | None:
        """Wait for a wake token (BLPOP, up to `timeout_s`), then `reserve`, in one round
        trip: an idle worker's next job starts one round trip after its enqueue, not two.
        Asked again after an error with the same request id, like `reserve`."""
        flat = self.run_after_wait([keys.wake(q) for q in queues], timeout_s, "reserve", "reserve jobs",
                                   *self._reserve_call(worker_id, queues, n, request_id))
        return self._reserved(queues, flat)

    @staticmethod
    def _reserve_call(worker_id: str, queues: Sequence[str], n: int,
                      request_id: str) -> tuple[list[str], list[str | int]]:
        ks: list[str] = []
        for q in queues:
            ks += (keys.inflight(worker_id, q), keys.queue(q), keys.wake(q), keys.ring(q))
        ks += (keys.PAUSED, keys.WORKERS, keys.reservation(worker_id), keys.PENDING,
               keys.PENDING_COUNT)
        return ks, [min(n, MAX_RESERVE), worker_id, request_id or new_id()]

    @staticmethod
    def _reserved(queues: Sequence[str], flat: Any) -> list[tuple[str, bytes]] | None:
        if flat and flat[0] == -1:
            return None
        return [(queues[int(flat[i]) - 1], flat[i + 1]) for i in range(0, len(flat), 2)]

    def ack(self, worker_id: str, acks: Mapping[str, Sequence[str]],
            starts: Sequence[tuple[str, str, bool, StatusWrite]] = (),
            tracked: Mapping[str, Sequence[tuple[str, bool, StatusWrite]]] | None = None) -> int:
        """Ack many jobs, grouped by queue, in one round trip.

        With status tracking, the same round trip first marks `starts` ((queue, job id, in
        flight, running status), each only while the job is still in this worker's in-flight
        hash, see ack_status.lua) running, then acks the tracked jobs in `tracked` (queue ->
        [(job id, in flight, succeeded status)]) and marks them succeeded. Returns the number
        of jobs acked."""
        if starts or tracked:
            return self._ack_tracked(worker_id, acks, starts, tracked or {})
        if len(acks) == 1:  # ack_many is repeatable: an ack sent twice removes nothing more
            ((q, ids),) = acks.items()
            return int(self.run("ack_many", "ack jobs", [keys.inflight(worker_id, q), keys.stat("processed")],
                                list(ids)))
        with self.errors("ack jobs"):
            pipe = self.redis.pipeline(transaction=False)
            for q, ids in acks.items():
                self._script("ack_many")(
                    keys=[keys.inflight(worker_id, q), keys.stat("processed")], args=list(ids), client=pipe)
            return sum(int(n) for n in pipe.execute())

    def ack_one(
        self,
        worker_id: str,
        queue: str,
        job_id: str,
        unique_key: str | None,
        children: Sequence[tuple[str, str]],
        in_flight: bool = True,
        status: StatusWrite | None = None,
    ) -> bool:
        """Ack one job, release its unique key, enqueue its chained children and write its
        status record (when tracked: succeeded, or what an unfinished delivery left)."""
        inflight = keys.inflight(worker_id, queue)
        ks = [inflight, keys.stat("processed"), unique_key or inflight, keys.QUEUES,
              status.key if status else inflight]
        args: list[str | int] = [job_id, "1" if unique_key else "0", "0" if in_flight else "1",
                                 status.fields if status else "", status.ttl_s if status else 0,
                                 status.if_worker if status else ""]
        for cq, payload in children:
            ks += (keys.queue(cq), keys.wake(cq))
            args += (cq, payload)
        return bool(self.run("ack_one", "ack a job", ks, args, repeatable=in_flight))

    def retry(
        self, worker_id: str, queue: str, job_id: str, delay_ms: int, payload: str, in_flight: bool = True,
        status: StatusWrite | None = None,
    ) -> bool:
        ks = [keys.inflight(worker_id, queue), keys.retry(queue), keys.stat("failed")]
        args: list[str | int] = [job_id, max(0, delay_ms), payload, "0" if in_flight else "1"]
        _add_status(ks, args, status)
        return bool(self.run("retry", "schedule a retry", ks, args, repeatable=in_flight))

    def reenqueue(self, worker_id: str, queue: str, job_id: str, delay_ms: int, payload: str,
                  in_flight: bool = True, status: StatusWrite | None = None) -> bool:
        """Put a job back (not a failure): at the back of its queue, or after a delay."""
        ks = [keys.inflight(worker_id, queue), keys.queue(queue), keys.wake(queue), keys.scheduled(queue)]
        args: list[str | int] = [job_id, max(0, delay_ms), payload, "0" if in_flight else "1"]
        _add_status(ks, args, status)
        return bool(self.run("reenqueue", "put a job back", ks, args, repeatable=in_flight))

    def dead(
        self,
        worker_id: str,
        queue: str,
        job_id: str,
        payload: str,
        in_flight: bool = True,
        unique_key: str | None = None,
        status: StatusWrite | None = None,
    ) -> bool:
        ks = [keys.inflight(worker_id, queue), keys.DEAD, keys.stat("dead"), unique_key or keys.DEAD]
        args: list[str | int] = [job_id, payload, DEAD_MAX_JOBS, DEAD_MAX_AGE_MS,
                                 "0" if in_flight else "1", "1" if unique_key else "0"]
        _add_status(ks, args, status)
        return bool(self.run("dead", "move a job to the dead set", ks, args))

    def settle(self, worker_id: str, queue: str, s: Settlement) -> bool:
        """End one delivery of worker `worker_id` from `queue` as `s` says (one script, one
        round trip; see podjobs.settlement). False when the job was no longer in flight."""
        k = s.kind
        if k is Kind.ACK or k is Kind.FORWARD or k is Kind.HOLD:
            return self.ack_one(worker_id, queue, s.job_id, s.unique, s.children, s.in_flight, s.status)
        if k is Kind.RETRY:
            return self.retry(worker_id, queue, s.job_id, s.delay_ms, s.payload, s.in_flight, s.status)
        if k is Kind.REENQUEUE:
            return self.reenqueue(worker_id, queue, s.job_id, s.delay_ms, s.payload, s.in_flight,
                                  s.status)
        if k is Kind.DEAD:
            return self.dead(worker_id, queue, s.job_id, s.payload, s.in_flight, s.unique, s.status)
        raise ValueError(f"settlement {s!r} has nothing to send")

    def _ack_tracked(self, worker_id: str, acks: Mapping[str, Sequence[str]],
                     starts: Sequence[tuple[str, str, bool, StatusWrite]],
                     tracked: Mapping[str, Sequence[tuple[str, bool, StatusWrite]]]) -> int:
        # one ack_status call per queue (the starts ride with the first), each its own
        # EVALSHA: a pipeline of scripts could half-run on NOSCRIPT
        n = self.ack(worker_id, acks) if acks else 0
        batches: list[tuple[str | None, Sequence[tuple[str, bool, StatusWrite]]]] = list(tracked.items())
        if not batches:
            batches = [(None, ())]
        for q, items in batches:
            processed = keys.stat("processed")
            ks = [keys.inflight(worker_id, q) if q is not None else processed, processed]
            args: list[str | int] = [len(starts)]
            for sq, sid, s_in_flight, st in starts:
                ks += (st.key, keys.inflight(worker_id, sq))
                args += (sid, "0" if s_in_flight else "1", st.fields, st.ttl_s)
            for jid, in_flight, st in items:
                ks.append(st.key)
                args += (jid, "0" if in_flight else "1", st.fields, st.ttl_s)
            n += int(self.run("ack_status", "ack tracked jobs", ks, args))
            starts = ()
        return n

    def status_record(self, job_id: str) -> dict[str, str]:
        """A tracked job's status record ({} when there is none)."""
        with self.errors("read a job's status"):
            raw = self.redis.hgetall(keys.status(job_id))
        return {text(k): text(v) for k, v in raw.items()}

    def cancel(self, job_id: str, queue: str, tenant: str | None, unique_key: str | None,
               ttl_s: int) -> tuple[str, str]:
        """Cancel a tracked job that has not started (see lua/cancel.lua): (outcome, state)."""
        sk = keys.status(job_id)
        ks = [sk, keys.queue(queue), keys.scheduled(queue), keys.retry(queue),
              keys.held(tenant) if tenant else sk, unique_key or sk, keys.PENDING, keys.PENDING_COUNT,
              keys.tenant_queue(queue, tenant) if tenant else keys.queue(queue)]
        res = self.run("cancel", "cancel a job", ks,
                        [job_id, queue, ttl_s, "1" if tenant else "0", "1" if unique_key else "0"])
        return text(res[0]), text(res[1])

    def recover(self, worker_id: str, queues: Sequence[str], force: bool = False) -> int:
        """Give a gone worker's in-flight jobs back (-1 when it is alive and not forced); a
        tracked job's record says queued again (reason recovered), with its payload."""
        ks = [keys.heartbeat(worker_id), keys.WORKERS, keys.worker_info(worker_id), keys.stat("recovered"),
              keys.reservation(worker_id)]
        for q in queues:
            ks += (keys.inflight(worker_id, q), keys.queue(q), keys.wake(q))
        return int(self.run("recover", "recover in-flight jobs", ks,
                             [worker_id, "1" if force else "0", keys.status(""), PENDING_TTL_S]))

    def requeue(self, worker_id: str, queue: str, items: Sequence[tuple[str, str | bytes]]) -> int:
        """Give reserved, unstarted jobs (id, payload) back to the front of their queue."""
        if not items:
            return 0
        args: list[str | bytes] = []
        for jid, payload in items:
            args += (jid, payload)
        ks = [keys.inflight(worker_id, queue), keys.queue(queue), keys.wake(queue)]
        return int(self.run("requeue", "give jobs back", ks, args))

    def promote(self, queues: Sequence[str], limit: int = 1000) -> int:
        """Move due scheduled and retry jobs of these queues into the queues."""
        ks: list[str] = []
        for q in queues:
            ks += (keys.scheduled(q), keys.retry(q), keys.queue(q), keys.wake(q))
        if not ks:
            return 0
        return int(self.run("promote", "promote due jobs", ks, [limit]))

    def heartbeat(self, worker_id: str, ttl_ms: int, first: bool, info: Mapping[str, str]) -> bool:
        """Beat; False when the worker had been reaped since the last beat."""
        args: list[Any] = [ttl_ms, worker_id, "1" if first else "0"]
        for k, v in info.items():
            args += (k, v)
        ks = [keys.heartbeat(worker_id), keys.WORKERS, keys.worker_info(worker_id)]
        return bool(self.run("heartbeat", "send a heartbeat", ks, args))

    # -- tenant moves ----------------------------------------------------------------

    def hold(self, tenant: str, queue: str, items: Sequence[tuple[str, str]],
             status: StatusWrite | None = None) -> bool:
        """Hold (job id, payload) pairs of a tenant being moved here; False when the move had
        already finished and the jobs went onto the queue. `status`: the record of a tracked
        job (one pair)."""
        if not items:
            return True
        if status is not None and len(items) != 1:
            raise ValueError("a tracked hold carries one job")
        args: list[str | int] = [queue, status.fields if status else "", status.ttl_s if status else 0]
        for jid, payload in items:
            args += (jid, payload)
        ks = [keys.held(tenant), keys.moving(tenant), keys.queue(queue), keys.wake(queue), keys.QUEUES]
        if status is not None:
            ks.append(status.key)
        return bool(self.run("hold", "hold jobs", ks, args))

    def held(self, tenant: str) -> dict[str, str]:
        with self.errors("read held jobs"):
            raw = self.redis.hgetall(keys.held(tenant))
        return {text(k): text(v) for k, v in raw.items()}

    def release(self, tenant: str, queue: str, job_ids: Sequence[str]) -> int:
        """Held jobs of one queue back onto it (or into its scheduled or retry set, see
        lua/release.lua), in the given order; ids no longer held are skipped."""
        ks = [keys.held(tenant), keys.queue(queue), keys.wake(queue), keys.QUEUES,
              keys.held_due(tenant), keys.scheduled(queue), keys.retry(queue)]
        return int(self.run("release", "release held jobs", ks, [queue, *job_ids]))

    def end_hold(self, tenant: str) -> int:
        ks = [keys.held(tenant), keys.moving(tenant), keys.held_due(tenant)]
        return int(self.run("end_hold", "end holding", ks, []))

    def accept(self, tenant: str, entries: Sequence[tuple[str, str, str, str]]) -> int:
        """Hold jobs carried from another pod, keyed by id (idempotent): (job id, kind
        "queue" | "sched" | "retry", due ms, payload)."""
        args: list[str] = []
        for jid, kind, score, payload in entries:
            args += (jid, kind, score, payload)
        if not args:
            return 0
        return int(self.run("accept", "hold carried jobs", [keys.held(tenant), keys.held_due(tenant)], args))

    def stage_held(self, tenant: str, job_ids: Sequence[str]) -> int:
        """Take held jobs into this pod's staging hash (a rollback sends them back)."""
        if not job_ids:
            return 0
        ks = [keys.held(tenant), keys.held_due(tenant), keys.carry(tenant)]
        return int(self.run("stage_held", "stage held jobs", ks, list(job_ids)))

    def take(self, key: str, kind: str, members: Sequence[str | bytes], what: str = "remove moved jobs") -> int:
        """Remove members from a list ("list"), sorted set ("zset") or hash ("hash", by
        field) in one step (lua/take.lua); returns how many were there."""
        if not members:
            return 0
        return int(self.run("take", what, [key], [kind, *members]))

    def carry(self, tenant: str, key: str, kind: str, queue: str,
              rows: Sequence[tuple[str, str, float]]) -> int:
        """Take (job id, payload as stored, score) rows of a moving tenant off `key` (its
        queue list, kind "queue", or scheduled/retry set, "sched"/"retry") into this pod's
        staging hash, atomically (see lua/carry.lua); rows no longer there are skipped."""
        if not rows:
            return 0
        args: list[Any] = [kind, queue]
        for jid, payload, score in rows:
            args += (jid, payload, score)
        return int(self.run("carry", "take jobs off the source pod", [key, keys.carry(tenant), keys.PENDING,
                                                                     keys.PENDING_COUNT], args))

    def mark_moving(self, tenant: str, move_id: str) -> None:
        """Hold the tenant's new jobs on this pod (the destination) from now on."""
        self.run("mark_moving", "mark a tenant moving", [keys.moving(tenant)], [move_id])

    def clear_move_acks(self, tenant: str) -> None:
        """Forget the workers' acks of a tenant's move on this pod (the source)."""
        self.run("clear_move_acks", "clear a move's acks", [keys.move_acks(tenant)], [])

    def ack_move(self, tenant: str, worker_id: str, version: int) -> None:
        """Worker `worker_id` of this pod runs none of the moving tenant's jobs (having
        seen its directory entry at `version`)."""
        self.run("ack_move", "ack a tenant's move", [keys.move_acks(tenant)], [worker_id, version])

    def move_acks(self, tenant: str) -> dict[str, int]:
        """Worker id -> directory version, of the workers that acked the tenant's move."""
        with self.errors("read a move's acks"):
            raw = self.redis.hgetall(keys.move_acks(tenant))
        return {text(k): int(v) for k, v in raw.items()}

    def staged(self, tenant: str) -> dict[str, str]:
        """Job id -> staged entry (JSON [kind, queue, score, payload]) of a move's staging."""
        with self.errors("read staged jobs"):
            raw = self.redis.hgetall(keys.carry(tenant))
        return {text(k): text(v) for k, v in raw.items()}

    def worker_ids(self) -> set[str]:
        """The registered workers of this pod."""
        with self.errors("list workers"):
            return {text(w) for w in self.redis.smembers(keys.WORKERS)}

    def queue_names(self) -> list[str]:
        """Every queue ever enqueued to on this pod, sorted."""
        with self.errors("list queues"):
            return sorted(text(x) for x in self.redis.smembers(keys.QUEUES))

    def queued(self, queue: str, key: str | None = None) -> list[bytes]:
        """The payloads waiting in a queue's own list (as stored), newest first, or in one of
        its ready lists, `key` (fairshare.ready_lists)."""
        with self.errors("read a queue"):
            raw: Any = self.redis.lrange(key or keys.queue(queue), 0, -1)
        return list(raw)

    def due_set(self, key: str) -> list[tuple[bytes, float]]:
        """Members and scores (due ms) of a scheduled or retry set, soonest first."""
        with self.errors("read a scheduled or retry set"):
            raw: Any = self.redis.zrange(key, 0, -1, withscores=True)
        return [(m, float(sc)) for m, sc in raw]

    def dead_worker_ids(self) -> list[tuple[str, list[str]]]:
        """Registered workers whose heartbeat is gone, with their queue lists."""
        with self.errors("list workers"):
            members = [text(m) for m in self.redis.smembers(keys.WORKERS)]
            if not members:
                return []
            pipe = self.redis.pipeline(transaction=False)
            for wid in members:
                pipe.exists(keys.heartbeat(wid))
                pipe.hget(keys.worker_info(wid), "queues")
            res = pipe.execute()
        out = []
        for i, wid in enumerate(members):
            alive, queues = res[2 * i], res[2 * i + 1]
            if not alive:
                qs = queues.decode().split(",") if queues else self._inflight_queues(wid)
                out.append((wid, qs))
        return out

    def _inflight_queues(self, worker_id: str) -> list[str]:
        prefix = keys.inflight(worker_id, "")
        return [text(k)[len(prefix):] for k in self.redis.scan_iter(match=prefix + "*", count=1000)]

    def close(self) -> None:
        self._close_directs()
        self._close_reads()
