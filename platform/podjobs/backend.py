"""The queue backend: the small interface workers and enqueuers use, and its
Redis implementation (one Redis per pod).

1. `Backend` is the interface (enqueue, reserve, ack, retry, dead, recover and
   the few helpers around them); job code and the worker only see this.
2. `RedisBackend` implements it with one Lua script per state change, each
   loaded once (`lua/*.lua`), so every transition is one round trip.
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

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any, Protocol
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from podjobs import keys
from podjobs.errors import BackendTimeout, BackendUnavailable, ConfigurationError
from podjobs.ids import new_id
from podjobs.payload import inflight_field as request_id
from podjobs.secrets import resolve as resolve_secrets
from podjobs.status import PENDING_TTL_S, StatusWrite

#: most jobs kept in the dead set, and their maximum age (6 months), like Sidekiq
DEAD_MAX_JOBS = 10_000
DEAD_MAX_AGE_MS = 180 * 24 * 3600 * 1000
#: most payloads per enqueue script call (a bulk enqueue is split in chunks)
ENQUEUE_CHUNK = 10_000
#: most jobs one reserve call takes (Lua's unpack limit is about 8,000 values)
MAX_RESERVE = 1000
#: milliseconds an enqueue's request marker is kept (a re-send within it is a duplicate)
REQUEST_MARKER_MS = 30_000
#: attempts of one script call on dropped connections (10 ms growing to 1 s between them)
SCRIPT_ATTEMPTS = 8

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
    ) -> int: ...

    def reserve(self, worker_id: str, queues: Sequence[str], n: int,
                request_id: str = "") -> list[tuple[str, bytes]] | None: ...

    def ack(self, worker_id: str, acks: Mapping[str, Sequence[str]],
            starts: Sequence[tuple[str, str, bool, StatusWrite]] = (),
            tracked: Mapping[str, Sequence[tuple[str, bool, StatusWrite]]] | None = None) -> int: ...

    def ack_one(
        self,
        worker_id: str,
        queue: str,
        job_id: str,
        unique_key: str | None,
        children: Sequence[tuple[str, str]],
        in_flight: bool = True,
        status: StatusWrite | None = None,
    ) -> bool: ...

    def retry(
        self, worker_id: str, queue: str, job_id: str, delay_ms: int, payload: str, in_flight: bool = True,
        status: StatusWrite | None = None,
    ) -> bool: ...

    def reenqueue(self, worker_id: str, queue: str, job_id: str, delay_ms: int, payload: str,
                  in_flight: bool = True, status: StatusWrite | None = None) -> bool: ...

    def dead(
        self,
        worker_id: str,
        queue: str,
        job_id: str,
        payload: str,
        in_flight: bool = True,
        unique_key: str | None = None,
        status: StatusWrite | None = None,
    ) -> bool: ...


    def recover(self, worker_id: str, queues: Sequence[str], force: bool = False) -> int: ...

    def requeue(self, worker_id: str, queue: str, items: Sequence[tuple[str, str | bytes]]) -> int: ...

    def promote(self, queues: Sequence[str], limit: int = 1000) -> int: ...

    def heartbeat(self, worker_id: str, ttl_ms: int, first: bool, info: Mapping[str, str]) -> bool: ...

    def wait_for_work(self, queues: Sequence[str], timeout_s: float) -> bool: ...

    def close(self) -> None: ...

    def hold(self, tenant: str, queue: str, items: Sequence[tuple[str, str]],
             status: StatusWrite | None = None) -> bool: ...


def _retry() -> Retry:
    """redis-py's retries (10, 10 ms growing to 1 s), on connection errors only. By default
    redis-py also sends a command again after a timeout: a script that was only slow would
    then run twice (an enqueue would push its job twice). A timeout raises BackendTimeout."""
    return Retry(ExponentialWithJitterBackoff(base=0.01, cap=1.0), 10,
                 supported_errors=(redis.ConnectionError,))


def _script_retry() -> Retry:
    """No retries inside redis-py for script calls: RedisBackend._run retries them itself,
    knowing whether each attempt got as far as sending."""
    return Retry(NoBackoff(), 0)


def _never_sent(exc: redis.ConnectionError) -> bool:
    """True when a connection error came from connecting (refused, unreachable): the
    command was not sent. redis-py words these 'Error N connecting to HOST:PORT' and
    'Timeout connecting to server'."""
    return "connecting to" in str(exc)


def _add_status(ks: list[str], args: list[str | int], status: StatusWrite | None) -> None:
    """Append a tracked job's status key and (fields, TTL) to a script call."""
    if status is not None:
        ks.append(status.key)
        args += (status.fields, status.ttl_s)


def text(v: bytes | str) -> str:
    """A Redis reply as str."""
    return v.decode() if isinstance(v, bytes) else v


def _load(name: str) -> str:
    return resources.files("podjobs").joinpath("lua", f"{name}.lua").read_text()


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


class RedisBackend:
    """The Redis implementation of `Backend` for one pod."""

    SCRIPTS = (
        "enqueue", "reserve", "ack_many", "ack_one", "retry", "dead",
        "promote", "heartbeat", "recover", "requeue", "dead_retry",
        "hold", "release", "end_hold", "take", "reenqueue", "carry", "cancel", "ack_status",
        "accept", "stage_held", "queue_pause", "queue_resume",
        "zset_now", "zset_delete",
    )

    def __init__(self, url: str, *, check: bool = True, socket_timeout: float = 10.0,
                 connect_timeout: float = 5.0) -> None:
        self.url = url  # as given: a password reference stays one (podjobs.secrets)
        url = resolve_secrets(url)
        self.redis: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
            health_check_interval=30, retry=_retry(),
        )
        self._scripts: dict[str, Script] = {n: self.redis.register_script(_load(n)) for n in self.SCRIPTS}
        #: the scripts' own pool, without redis-py's retries (see _run)
        self._once: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
            health_check_interval=30, retry=_script_retry(),
        )
        if check:
            self.check()

    # -- errors ---------------------------------------------------------------------

    @contextmanager
    def _errors(self, what: str, sent: bool = False) -> Iterator[None]:
        """Redis errors as BackendUnavailable (nothing was changed) or BackendTimeout (the
        change may or may not have been made: a timeout after the command was sent, or a
        dropped connection when `sent` says an attempt may have reached Redis)."""
        try:
            yield
        except redis.ConnectionError as exc:
            if sent:
                raise BackendTimeout(
                    f"cannot {what}: the connection to Redis at {redacted(self.url)} broke "
                    f"({exc}); the change may or may not have been made. Check the pod's Redis "
                    f"('podjobs dev status'); repeating the same call is safe"
                ) from exc
            raise BackendUnavailable(
                f"cannot {what}: Redis at {redacted(self.url)} is unreachable ({exc}); "
                f"nothing was changed. Check that the pod's Redis runs ('podjobs dev status')"
            ) from exc
        except redis.TimeoutError as exc:
            if "connecting" in str(exc) and not sent:
                raise BackendUnavailable(
                    f"cannot {what}: Redis at {redacted(self.url)} did not accept a connection "
                    f"in time ({exc}); nothing was changed. Check the pod's Redis "
                    f"('podjobs dev status')"
                ) from exc
            raise BackendTimeout(
                f"cannot {what}: Redis at {redacted(self.url)} did not answer in time ({exc}); "
                f"the change may or may not have been made. Check the pod's Redis (its load, "
                f"'podjobs dev status')"
            ) from exc
        except redis.ResponseError as exc:
            if isinstance(exc, redis.exceptions.OutOfMemoryError) or str(exc).startswith("OOM"):
                raise BackendUnavailable(
                    f"cannot {what}: Redis at {redacted(self.url)} is out of memory ({exc}); "
                    f"nothing was written. Raise maxmemory or drain the queues"
                ) from exc
            raise

    def _run(self, name: str, what: str, keys_: Sequence[str], args: Sequence[Any],
             repeatable: bool = True) -> Any:
        """Run a script in one round trip. After a dropped connection it is sent again (up
        to SCRIPT_ATTEMPTS times) when it never got through, or when it is `repeatable`
        (safe to run twice, see the module docstring); a timeout is never sent again. The
        error says "may or may not" once any attempt may have reached Redis."""
        script = self._scripts[name]
        sent = False
        delay = 0.01
        attempt = 0
        while True:
            attempt += 1
            try:
                try:
                    return self._once.execute_command(  # type: ignore[no-untyped-call]
                        "EVALSHA", script.sha, len(keys_), *keys_, *args)
                except redis.exceptions.NoScriptError:
                    self._once.script_load(script.script)
                    return self._once.execute_command(  # type: ignore[no-untyped-call]
                        "EVALSHA", script.sha, len(keys_), *keys_, *args)
            except redis.ConnectionError as exc:
                sent = sent or not _never_sent(exc)
                if attempt < SCRIPT_ATTEMPTS and (repeatable or not sent):
                    time.sleep(delay)
                    delay = min(1.0, delay * 2)
                    continue
                with self._errors(what, sent):
                    raise
            except redis.RedisError:
                with self._errors(what, sent):
                    raise

    def check(self) -> None:
        """Ping, and refuse a Redis that may evict keys (jobs would vanish)."""
        with self._errors("connect"):
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
    ) -> int:
        """Push payloads to `queue` now, after `delay_ms`, or at `at_ms`.

        `unique` = (key, ttl_ms, owner job id): nothing is written while the key is held.
        `status`: the status record of a tracked job (one payload), written in the same step.
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
        if status is not None:
            if len(payloads) != 1:
                raise ValueError("a tracked enqueue carries one job")
            ks.append(status.key)
            return int(self._run("enqueue", "enqueue", ks, [queue, when, ms, uttl, owner, status.fields,
                                                             status.ttl_s, REQUEST_MARKER_MS, payloads[0]]))
        if len(payloads) <= ENQUEUE_CHUNK:
            return int(self._run("enqueue", "enqueue", ks,
                                 [queue, when, ms, uttl, owner, "", 0, REQUEST_MARKER_MS, *payloads]))
        if unique:
            raise ValueError("a unique enqueue carries one job")
        written = 0
        pipe = self._once.pipeline(transaction=True)  # all chunks or none
        for i in range(0, len(payloads), ENQUEUE_CHUNK):
            chunk = payloads[i : i + ENQUEUE_CHUNK]
            ks[5] = keys.request(request_id(chunk[0]))
            self._scripts["enqueue"](keys=ks, args=[queue, when, ms, 0, "", "", 0, REQUEST_MARKER_MS,
                                                    *chunk], client=pipe)
        try:
            results = pipe.execute()
        except redis.ConnectionError as exc:
            with self._errors("enqueue", not _never_sent(exc)):
                raise
        except redis.RedisError:
            with self._errors("enqueue", True):
                raise
        for n in results:
            written += int(n)
        return written

    # -- worker side ----------------------------------------------------------------

    def reserve(self, worker_id: str, queues: Sequence[str], n: int,
                request_id: str = "") -> list[tuple[str, bytes]] | None:
        """Reserve up to n jobs in priority order; None when this worker was reaped.

        `request_id`: fresh for each reservation; asked again with the same id after an
        error (a lost reply), it answers the jobs that request took, still in flight, and
        takes no more (see reserve.lua)."""
        ks: list[str] = []
        for q in queues:
            ks += (keys.inflight(worker_id, q), keys.queue(q), keys.wake(q))
        ks += (keys.PAUSED, keys.WORKERS, keys.reservation(worker_id))
        flat = self._run("reserve", "reserve jobs", ks,
                         [min(n, MAX_RESERVE), worker_id, request_id or new_id()])
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
        with self._errors("ack jobs"):
            if len(acks) == 1:
                ((q, ids),) = acks.items()
                return int(self._scripts["ack_many"](
                    keys=[keys.inflight(worker_id, q), keys.stat("processed")], args=list(ids)))
            pipe = self.redis.pipeline(transaction=False)
            for q, ids in acks.items():
                self._scripts["ack_many"](
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
        return bool(self._run("ack_one", "ack a job", ks, args, repeatable=in_flight))

    def retry(
        self, worker_id: str, queue: str, job_id: str, delay_ms: int, payload: str, in_flight: bool = True,
        status: StatusWrite | None = None,
    ) -> bool:
        ks = [keys.inflight(worker_id, queue), keys.retry(queue), keys.stat("failed")]
        args: list[str | int] = [job_id, max(0, delay_ms), payload, "0" if in_flight else "1"]
        _add_status(ks, args, status)
        return bool(self._run("retry", "schedule a retry", ks, args, repeatable=in_flight))

    def reenqueue(self, worker_id: str, queue: str, job_id: str, delay_ms: int, payload: str,
                  in_flight: bool = True, status: StatusWrite | None = None) -> bool:
        """Put a job back (not a failure): at the back of its queue, or after a delay."""
        ks = [keys.inflight(worker_id, queue), keys.queue(queue), keys.wake(queue), keys.scheduled(queue)]
        args: list[str | int] = [job_id, max(0, delay_ms), payload, "0" if in_flight else "1"]
        _add_status(ks, args, status)
        return bool(self._run("reenqueue", "put a job back", ks, args, repeatable=in_flight))

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
        return bool(self._run("dead", "move a job to the dead set", ks, args))

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
            n += int(self._run("ack_status", "ack tracked jobs", ks, args))
            starts = ()
        return n

    def cancel(self, job_id: str, queue: str, tenant: str | None, unique_key: str | None,
               ttl_s: int) -> tuple[str, str]:
        """Cancel a tracked job that has not started (see lua/cancel.lua): (outcome, state)."""
        sk = keys.status(job_id)
        ks = [sk, keys.queue(queue), keys.scheduled(queue), keys.retry(queue),
              keys.held(tenant) if tenant else sk, unique_key or sk]
        res = self._run("cancel", "cancel a job", ks,
                        [job_id, queue, ttl_s, "1" if tenant else "0", "1" if unique_key else "0"])
        return text(res[0]), text(res[1])

    def recover(self, worker_id: str, queues: Sequence[str], force: bool = False) -> int:
        """Give a gone worker's in-flight jobs back (-1 when it is alive and not forced); a
        tracked job's record says queued again (reason recovered), with its payload."""
        ks = [keys.heartbeat(worker_id), keys.WORKERS, keys.worker_info(worker_id), keys.stat("recovered"),
              keys.reservation(worker_id)]
        for q in queues:
            ks += (keys.inflight(worker_id, q), keys.queue(q), keys.wake(q))
        return int(self._run("recover", "recover in-flight jobs", ks,
                             [worker_id, "1" if force else "0", keys.status(""), PENDING_TTL_S]))

    def requeue(self, worker_id: str, queue: str, items: Sequence[tuple[str, str | bytes]]) -> int:
        """Give reserved, unstarted jobs (id, payload) back to the front of their queue."""
        if not items:
            return 0
        args: list[str | bytes] = []
        for jid, payload in items:
            args += (jid, payload)
        ks = [keys.inflight(worker_id, queue), keys.queue(queue), keys.wake(queue)]
        return int(self._run("requeue", "give jobs back", ks, args))

    def promote(self, queues: Sequence[str], limit: int = 1000) -> int:
        """Move due scheduled and retry jobs of these queues into the queues."""
        ks: list[str] = []
        for q in queues:
            ks += (keys.scheduled(q), keys.retry(q), keys.queue(q), keys.wake(q))
        if not ks:
            return 0
        return int(self._run("promote", "promote due jobs", ks, [limit]))

    def heartbeat(self, worker_id: str, ttl_ms: int, first: bool, info: Mapping[str, str]) -> bool:
        """Beat; False when the worker had been reaped since the last beat."""
        args: list[Any] = [ttl_ms, worker_id, "1" if first else "0"]
        for k, v in info.items():
            args += (k, v)
        ks = [keys.heartbeat(worker_id), keys.WORKERS, keys.worker_info(worker_id)]
        return bool(self._run("heartbeat", "send a heartbeat", ks, args))

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
        return bool(self._run("hold", "hold jobs", ks, args))

    def held(self, tenant: str) -> dict[str, str]:
        with self._errors("read held jobs"):
            raw = self.redis.hgetall(keys.held(tenant))
        return {text(k): text(v) for k, v in raw.items()}

    def release(self, tenant: str, queue: str, job_ids: Sequence[str]) -> int:
        """Held jobs of one queue back onto it (or into its scheduled or retry set, see
        lua/release.lua), in the given order; ids no longer held are skipped."""
        ks = [keys.held(tenant), keys.queue(queue), keys.wake(queue), keys.QUEUES,
              keys.held_due(tenant), keys.scheduled(queue), keys.retry(queue)]
        return int(self._run("release", "release held jobs", ks, [queue, *job_ids]))

    def end_hold(self, tenant: str) -> int:
        ks = [keys.held(tenant), keys.moving(tenant), keys.held_due(tenant)]
        return int(self._run("end_hold", "end holding", ks, []))

    def accept(self, tenant: str, entries: Sequence[tuple[str, str, str, str]]) -> int:
        """Hold jobs carried from another pod, keyed by id (idempotent): (job id, kind
        "queue" | "sched" | "retry", due ms, payload)."""
        args: list[str] = []
        for jid, kind, score, payload in entries:
            args += (jid, kind, score, payload)
        if not args:
            return 0
        return int(self._run("accept", "hold carried jobs", [keys.held(tenant), keys.held_due(tenant)], args))

    def stage_held(self, tenant: str, job_ids: Sequence[str]) -> int:
        """Take held jobs into this pod's staging hash (a rollback sends them back)."""
        if not job_ids:
            return 0
        ks = [keys.held(tenant), keys.held_due(tenant), keys.carry(tenant)]
        return int(self._run("stage_held", "stage held jobs", ks, list(job_ids)))

    def take(self, key: str, kind: str, members: Sequence[str | bytes]) -> int:
        if not members:
            return 0
        return int(self._run("take", "remove moved jobs", [key], [kind, *members]))

    def wait_for_work(self, queues: Sequence[str], timeout_s: float) -> bool:
        """Block until a wake token arrives for one of the queues (or the timeout)."""
        with self._errors("wait for jobs"):
            got = self.redis.blpop([keys.wake(q) for q in queues], timeout=timeout_s)
        return got is not None

    def dead_worker_ids(self) -> list[tuple[str, list[str]]]:
        """Registered workers whose heartbeat is gone, with their queue lists."""
        with self._errors("list workers"):
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
        self.redis.close()
