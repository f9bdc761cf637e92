"""The side-effect half of the HTTP API: enqueue, read and cancel tracked jobs, read pods.

1. `Service(router, settings)` enqueues through the pods `Router` (tenant -> pod, from the
   watched directory), exactly like the Python enqueuer, with `track` set so every job
   gets a status record on its pod (see podjobs.status).
2. `find(principal, id)`: the record is looked for on the caller's tenant pod first, then
   on every other pod at once (a job enqueued before a tenant move keeps its record on the
   old pod until it starts on the new one). When two pods hold one (a forwarded or moved
   job), the one on the tenant's current pod wins, and a record left behind by a forward
   (reason moved) loses to any other. A record of another tenant is never
   returned, and nothing more is read for it (no timing difference to a missing record).
   These reads, and the operator views, use clients of their own with a short connect and
   read timeout (`Settings.read_timeout_s`) and one retry (READ_RETRIES), so one
   unresponsive or refusing pod costs a request at most that long and never stalls the
   API's threads.
3. `cancel`: one Lua script (lua/cancel.lua) removes the job from its queue, scheduled or
   retry set, or held hash, only if it is still there.
   A pod on the SQL backend (`backend: sql`) is read and cancelled through its SqlBackend
   (the router's): the record from pj_status (`status_record`), a worker's liveness from
   its lease; an iteration job's progress is not shown there.
4. `pods()` / `pod_queues(pod)`: the operator views.
Errors are `ApiError`s carrying the HTTP status, detail and headers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from podjobs import keys, status
from podjobs.backend import RedisBackend
from podjobs.client import Client
from podjobs.errors import (
    BackendTimeout,
    BackendUnavailable,
    ConfigurationError,
    PayloadError,
    PayloadTooLarge,
    PodDraining,
    TenantMoving,
    UnknownPod,
    UnknownTenant,
)
from podjobs.gateway import RedisError, text
from podjobs.iteration import iterkeys as iter_keys
from podjobs.iteration.state import Progress
from podjobs.jobs import Call, JobDef, registered
from podjobs.ops import Inspector
from podjobs.quota import QuotaExceeded
from podjobs.surface.api.argschema import ArgSchema, for_job
from podjobs.table import iso_times

from .auth import Principal
from .body import EnqueueRequest
from .views import job_view, monitor_path, queued_view, valid_job_id

#: seconds the queues a pod's workers serve are cached (enqueue checks them)
SERVED_TTL_S = 2.0
#: redis-py's retries of a read after a refused or dropped connection: one, not the
#: gateway's ten (~4 s), so a request to a pod whose Redis is down is answered 503 with
#: Retry-After at once instead of being held
READ_RETRIES = 1

log = logging.getLogger("podjobs.api")

T = TypeVar("T")


@dataclass
class Settings:
    """What `podjobs api` is configured with (see its --help)."""

    #: largest request body, in bytes (the core's payload limit is the same, 512 KiB)
    max_body_bytes: int = 512 * 1024
    #: most seconds a synchronous request waits for its job
    max_wait_s: float = 30.0
    #: seconds a synchronous request waits when only Expect asks for it (no Prefer: wait)
    default_wait_s: float = 10.0
    #: seconds a finished job's status record is kept
    status_ttl_s: int = status.DEFAULT_FINISHED_TTL_S
    #: Retry-After of a 503 because a pod's Redis is unreachable
    retry_after_unavailable_s: int = 5
    #: Retry-After of a 503 because the pod is draining or the tenant is moving
    retry_after_draining_s: int = 30
    #: modules that define the jobs (imported before serving)
    app_modules: list[str] = field(default_factory=list)
    #: seconds a status or operator read of a pod may take to connect, and to answer
    read_timeout_s: float = 1.0
    #: refuse an enqueue on a queue no live worker of the tenant's pod serves (422)
    refuse_unserved_queues: bool = True
    #: append a JSON line for every state-changing request to this file (None: no audit log)
    audit_log: str | None = None


class ApiError(Exception):
    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}


def not_found_job(job_id: str) -> ApiError:
    return ApiError(404, f"no job {job_id!r} (unknown, finished more than the status TTL ago, "
                         f"or not yours)")


def maybe_enqueued(job_id: str | None, retry_after_s: int) -> ApiError:
    """503 for an enqueue the pod's Redis did not answer: it may have been written (the
    script was sent), so the caller looks at the job's monitor before enqueueing again."""
    if job_id is None:
        return ApiError(503, "the tenant's pod did not answer in time; the job may or may not "
                             "have been enqueued", {"Retry-After": str(retry_after_s)})
    mon = monitor_path(job_id)
    return ApiError(503, f"the tenant's pod did not answer in time; job {job_id} may or may not "
                         f"have been enqueued: GET its status monitor (in Location) before "
                         f"enqueueing again (404 there, once the pod answers promptly again, means it "
                         f"was not)",
                    {"Retry-After": str(retry_after_s), "Location": mon},
                    extra={"id": job_id, "monitor": mon})


def not_found_tenant(tenant: str) -> ApiError:
    return ApiError(404, f"no tenant {tenant!r}")


def is_async_only(jd: JobDef) -> bool:
    from podjobs.iteration import IterationJob

    cls = jd.job_class
    return jd.options.async_only or (isinstance(cls, type) and issubclass(cls, IterationJob))


@dataclass
class Found:
    pod: str
    record: dict[str, str]
    progress: dict[str, Any] | None
    worker_alive: bool | None

    def view(self, job_id: str) -> dict[str, Any]:
        return job_view(job_id, self.record, self.progress, self.worker_alive)


def _strs(h: dict[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in h.items()}


class Service:
    def __init__(self, router: Any, settings: Settings | None = None,
                 jobs: Callable[[], dict[str, JobDef]] = registered) -> None:
        self.router = router
        self.directory = router.directory
        self.settings = settings or Settings()
        self.client = Client(resolver=router.resolve)
        self._jobs = jobs
        #: short-timeout clients for reading pods (see the module doc), by pod
        self._readers: dict[str, RedisBackend] = {}
        self._readers_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="podjobs-api-read")
        #: pod -> (when read, the queues its live workers serve or None)
        self._served: dict[str, tuple[float, set[str] | None]] = {}
        self._arg_schemas: dict[str, ArgSchema] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._readers_lock:
            readers, self._readers = list(self._readers.values()), {}
        for b in readers:
            b.close()

    def reader(self, pod: str) -> RedisBackend:
        """A client of the pod's Redis for reads, with the short timeouts (made once; remade
        when the pod's URL changes). Raises UnknownPod."""
        url = self.directory.pod(pod).redis_url
        b = self._readers.get(pod)
        if b is not None and b.url == url:
            return b
        with self._readers_lock:
            b = self._readers.get(pod)
            if b is None or b.url != url:
                t = self.settings.read_timeout_s
                b = RedisBackend(url, check=False, socket_timeout=t, connect_timeout=t,
                                 retries=READ_RETRIES)
                self._readers[pod] = b
            return b

    def _sql(self, pod: str) -> Any:
        """The pod's SqlBackend (the router's) when its queue is on the SQL backend, else None."""
        if getattr(self.directory.pod(pod), "backend", "redis") != "sql":
            return None
        return self.router.backend(pod)

    def _inspector(self, pod: str) -> Any:
        """The pod's Inspector: podjobs.ops on Redis, SqlInspector on SQL."""
        sql = self._sql(pod)
        if sql is None:
            return Inspector(self.reader(pod))
        from podjobs.sqlbackend.ops import SqlInspector

        return SqlInspector(sql)

    def _each(self, fn: Callable[[str], T], pods: Sequence[str]) -> list[tuple[str, T | Exception]]:
        """(pod, fn(pod) or the exception it raised) for each pod, the pods at once."""
        def one(pod: str) -> T | Exception:
            try:
                return fn(pod)
            except Exception as exc:
                return exc

        if len(pods) <= 1:
            return [(p, one(p)) for p in pods]
        return list(zip(pods, self._pool.map(one, pods), strict=True))

    # -- enqueue ---------------------------------------------------------------------

    def job(self, name: str, queue: str | None = None,
            principal: Principal | None = None) -> JobDef:
        """The job a request names, when it may be enqueued over HTTP (declared with
        `@podjobs.job(api=...)`, on a queue it allows, and, for a token limited to some jobs,
        one of them); else 422 (a job not callable over HTTP answers as an unknown one) or
        403."""
        jd = self._jobs().get(name)
        if jd is None or not jd.options.api:
            raise ApiError(422, f"no job named {name!r} can be enqueued over HTTP: it must be "
                                f"registered in this API server (--app MODULE) and declared "
                                f"with @podjobs.job(api=True)",
                           extra={"errors": [{"loc": ["body", "job"], "msg": "unknown job"}]})
        if principal is not None and not principal.may_enqueue(name):
            raise ApiError(403, f"the token {principal.name!r} may not enqueue {name!r}")
        if not jd.options.api_allows(queue):
            allowed = [jd.options.queue, *jd.options.api_queues]
            raise ApiError(422, f"job {name!r} may not be enqueued on queue {queue!r} over HTTP; "
                                f"allowed: {', '.join(allowed)}",
                           extra={"errors": [{"loc": ["body", "queue"], "msg": "queue not allowed"}]})
        return jd

    def served_queues(self, pod: str) -> set[str] | None:
        """The queues the pod's live workers serve (None: no live worker, so unknown: the
        jobs wait for the workers to come back); cached for SERVED_TTL_S."""
        now = time.monotonic()
        hit = self._served.get(pod)
        if hit is not None and now - hit[0] < SERVED_TTL_S:
            return hit[1]
        live = [w for w in self._inspector(pod).workers() if w.alive]
        served = {q for w in live for q in w.queues} if live else None
        self._served[pod] = (now, served)
        return served

    def _check_served(self, tenant: str, queue: str) -> None:
        entry = self.directory.tenant(tenant)
        if entry is None:
            return  # enqueue answers 404 for the unknown tenant
        try:
            served = self.served_queues(str(entry.pod))
        except (BackendUnavailable, RedisError):
            return  # enqueue answers 503 for the pod
        if served is not None and queue not in served:
            raise ApiError(422, f"no live worker of pod {entry.pod} serves queue {queue!r}; the "
                                f"queues served: {', '.join(sorted(served))}. Nothing was "
                                f"enqueued", extra={"errors": [{"loc": ["body", "queue"],
                                                                "msg": "queue not served"}]})

    def arg_schema(self, jd: JobDef) -> ArgSchema:
        """The job's argument schema (podjobs.surface.api.argschema), built once."""
        got = self._arg_schemas.get(jd.name)
        if got is None:
            got = self._arg_schemas[jd.name] = for_job(jd)
        return got

    def check_arguments(self, jd: JobDef, req: EnqueueRequest) -> None:
        """422 unless the arguments bind to the job's function and each value fits its
        parameter's annotation (the errors name the argument)."""
        why = jd.arguments_fit(req.args, req.kwargs)
        if why is not None:
            raise ApiError(422, f"arguments do not fit {jd.name}{jd._signature}: {why}",
                           extra={"errors": [{"loc": ["body", "args"], "msg": why}]})
        s = self.arg_schema(jd)
        errors = s.errors(req.args, req.kwargs)
        if errors:
            raise ApiError(422, f"arguments do not fit {jd.name}{s.signature}: "
                                + "; ".join(e["msg"] for e in errors[:5]),
                           extra={"errors": errors})

    def enqueue(self, principal: Principal, tenant: str, jd: JobDef,
                req: EnqueueRequest) -> tuple[dict[str, Any], str]:
        """Enqueue a tracked job for `tenant`; (its queued document, its pod)."""
        if not principal.may_act_for(tenant):
            raise not_found_tenant(tenant)
        if self.settings.refuse_unserved_queues:
            self._check_served(tenant, req.queue or jd.options.queue)
        call = Call(jd, tuple(req.args), dict(req.kwargs), queue=req.queue,
                    track=self.settings.status_ttl_s)
        s = self.settings
        try:
            handle = self.client.enqueue_call(call, tenant=tenant, delay=req.delay or None)
        except UnknownTenant:
            raise not_found_tenant(tenant) from None
        except (PodDraining, TenantMoving) as exc:
            raise ApiError(503, str(exc), {"Retry-After": str(s.retry_after_draining_s)}) from None
        except QuotaExceeded as exc:
            raise ApiError(429, str(exc), {"Retry-After": exc.retry_after_header}) from None
        except BackendTimeout as exc:
            log.warning("enqueue of job %s for %s unanswered: %s", exc.job_id, tenant, exc)
            raise maybe_enqueued(exc.job_id, s.retry_after_unavailable_s) from None
        except BackendUnavailable as exc:
            log.warning("enqueue for %s refused: %s", tenant, exc)
            raise ApiError(503, "the tenant's pod cannot take jobs now (its Redis is unreachable); "
                                "nothing was enqueued",
                           {"Retry-After": str(s.retry_after_unavailable_s)}) from None
        except PayloadTooLarge as exc:
            raise ApiError(413, str(exc)) from None
        except PayloadError as exc:  # a value the payload cannot carry (parse_enqueue catches most)
            raise ApiError(422, str(exc), extra={"errors": [{"loc": ["body"], "msg": str(exc)}]}) from None
        except ConfigurationError as exc:  # e.g. a queue name the core refuses
            raise ApiError(422, str(exc)) from None
        if not handle.enqueued:
            raise ApiError(409, f"an identical {jd.name} job is already pending (the job is unique "
                                f"for {jd.options.unique_for:g} s); nothing was enqueued")
        now = self._enqueued_ms(handle.pod, handle.id)
        run_at = now + int(req.delay * 1000) if req.delay else None
        view = queued_view(handle.id, jd.name, tenant, handle.queue, jd.options.retries + 1,
                           now, run_at)
        return view, handle.pod or ""

    def _enqueued_ms(self, pod: str | None, job_id: str) -> int:
        """When the job was enqueued on Redis' clock (its record's enqueued_ms, the time
        every later answer shows); the server's clock only when the record cannot be read."""
        try:
            if pod and (sql := self._sql(pod)) is not None:
                got = sql.status_record(job_id).get("enqueued_ms")
                if got:
                    return int(got)
            elif pod:
                b = self.reader(pod)
                with b.errors("read a job's enqueue time"):
                    got = b.redis.hget(keys.status(job_id), "enqueued_ms")
                if got:
                    return int(got)
        except Exception as exc:  # the job is enqueued: answer anyway
            log.warning("enqueue time of job %s unreadable: %s", job_id, exc)
        return time.time_ns() // 1_000_000

    # -- reading a job -----------------------------------------------------------------

    def _pods_to_search(self, principal: Principal) -> tuple[list[str], list[str]]:
        """(the caller's tenant's pods: where it lives and where it moves to; the others)."""
        names = list(self.directory.pods())
        first: list[str] = []
        if principal.tenant is not None:
            entry = self.directory.tenant(principal.tenant)
            if entry is not None:
                first = list(dict.fromkeys(
                    [entry.pod] + [str(p) for p in ((entry.move or {}).get("to"),) if p]))
        return first, [n for n in names if n not in first]

    def _read(self, pod: str, job_id: str, principal: Principal) -> Found | None:
        """The record on `pod` when there is one the principal may see; nothing more is read
        for another tenant's record."""
        sql = self._sql(pod)
        if sql is not None:
            return self._read_sql(sql, pod, job_id, principal)
        b = self.reader(pod)
        sk = keys.status(job_id)
        with b.errors("read a job's status"):
            # the tenant first: another tenant's record is never read (nor is its size felt)
            owner = b.redis.hmget(sk, ["tenant", "state"])
        if owner[1] is None:
            return None
        if not principal.may_act_for(text(owner[0]) if owner[0] else None):
            return None
        with b.errors("read a job's status"):
            pipe = b.redis.pipeline(transaction=False)
            pipe.hgetall(sk)
            pipe.hgetall(iter_keys.job(job_id))
            pipe.time()
            raw, it, (sec, usec) = pipe.execute()
        if not raw:
            return None
        rec = _strs(raw)
        progress = None
        if it:
            now_ms = int(sec) * 1000 + int(usec) // 1000
            progress = Progress.from_hash(job_id, _strs(it), now_ms).as_dict()
        alive = None
        if rec.get("state") == "running" and rec.get("worker"):
            with b.errors("read a worker's heartbeat"):
                alive = bool(b.redis.exists(keys.heartbeat(rec["worker"])))
        return Found(pod, rec, progress, alive)

    @staticmethod
    def _read_sql(sql: Any, pod: str, job_id: str, principal: Principal) -> Found | None:
        """`_read` on a SQL pod: the record is one row (read whole, then the tenant checked)."""
        rec: dict[str, str] = sql.status_record(job_id)
        if not rec.get("state") or not principal.may_act_for(rec.get("tenant") or None):
            return None
        alive = None
        if rec.get("state") == "running" and rec.get("worker"):
            alive = bool(sql.worker_alive(rec["worker"]))
        return Found(pod, rec, None, alive)

    def find(self, principal: Principal, job_id: str) -> Found:
        """The job's record (see the module doc); ApiError 404, or 503 when a pod that might
        hold it cannot be read."""
        if not valid_job_id(job_id):
            raise not_found_job(job_id)
        unreachable: list[str] = []
        found: list[Found] = []
        for group in self._pods_to_search(principal):
            for pod, f in self._each(lambda p: self._read(p, job_id, principal), group):
                if isinstance(f, BackendUnavailable | RedisError | ConfigurationError):
                    log.warning("pod %s could not be searched for job %s: %s", pod, job_id, f)
                    unreachable.append(pod)
                    continue
                if isinstance(f, Exception):
                    raise f
                if f is None:
                    continue
                moved = f.record.get("reason") == status.MOVED
                if not moved and self._current_pod(f) == pod:
                    return f  # the record on the tenant's pod is the latest word
                found.append(f)
        if found:  # a record that says the job went to another pod is the last resort
            return max(found, key=lambda f: (f.record.get("reason") != status.MOVED,
                                             int(f.record.get("updated_ms") or 0)))
        if unreachable:
            raise ApiError(503, f"pod(s) {', '.join(unreachable)} cannot be read now; the job "
                                f"may live there",
                           {"Retry-After": str(self.settings.retry_after_unavailable_s)})
        raise not_found_job(job_id)

    def _current_pod(self, f: Found) -> str | None:
        tenant = f.record.get("tenant")
        entry = self.directory.tenant(tenant) if tenant else None
        if entry is None:
            return f.record.get("pod") or f.pod
        return str(entry.pod)

    def read_state(self, pod: str, job_id: str) -> str:
        """The record's state on `pod` ("" when none): the cheap read a waiting request polls."""
        b = self.router.backend(pod)
        if not isinstance(b, RedisBackend):
            return str(b.status_record(job_id).get("state", ""))
        with b.errors("read a job's status"):
            st = b.redis.hget(keys.status(job_id), "state")
        return text(st) if st else ""

    # -- cancel --------------------------------------------------------------------------

    def cancel(self, principal: Principal, job_id: str) -> tuple[bool, dict[str, Any]]:
        """(cancelled now or before, the job's document); 409 when it has started."""
        for _ in range(3):
            f = self.find(principal, job_id)
            rec = f.record
            payload = rec.get("payload")
            unique = None
            ttl = self.settings.status_ttl_s
            if payload:
                try:
                    data = json.loads(payload)
                    unique = data.get("unique") if isinstance(data.get("unique"), str) else None
                    ttl = status.finished_ttl(data)
                except ValueError:
                    pass
            b = self.router.backend(f.pod)
            try:
                outcome, state = b.cancel(job_id, rec.get("queue", ""), rec.get("tenant") or None,
                                          unique, ttl)
            except BackendUnavailable:
                raise ApiError(503, f"pod {f.pod} cannot be reached to cancel the job",
                               {"Retry-After": str(self.settings.retry_after_unavailable_s)}) from None
            if outcome == "stale":
                continue
            if outcome == "unknown":
                raise not_found_job(job_id)
            if outcome == "cancelled" and f.progress is not None:
                self._cancel_iteration(b, job_id)
            view = self.find(principal, job_id).view(job_id)
            if outcome in ("cancelled", "already"):
                return True, view
            if state not in ("queued", "retrying"):
                why = "it has already started"
            elif rec.get("reason") == "paused" and not payload:
                why = ("it is a paused iteration job; cancel it with 'podjobs iterations "
                       "cancel', or resume it first")
            else:
                why = "a worker has just taken it"
            raise ApiError(409, f"job {job_id} cannot be cancelled: {why} (state {view['state']})",
                           extra={"job": view})
        raise ApiError(409, f"job {job_id} kept changing; try again")

    @staticmethod
    def _cancel_iteration(b: RedisBackend, job_id: str) -> None:
        from podjobs.iteration.admin import Iterations

        try:
            Iterations(b).cancel(job_id)
        except Exception as exc:  # the job is off its queue already; only the view lags
            log.warning("iteration job %s cancelled but its progress not marked: %s", job_id, exc)

    # -- operators -------------------------------------------------------------------------

    def _pod_row(self, name: str) -> dict[str, Any]:
        ins = Inspector(self.reader(name))
        return {"queues": [q.__dict__ for q in ins.queues()],
                "workers": [{"id": w.id, "host": w.host, "pid": w.pid, "queues": w.queues,
                             "concurrency": w.concurrency, "busy": len(w.busy)}
                            for w in ins.workers() if w.alive]}

    def pods(self) -> list[dict[str, Any]]:
        """Every pod's row; the pods are read at once."""
        pods = self.directory.pods()
        out = []
        for name, got in self._each(self._pod_row, list(pods)):
            row: dict[str, Any] = {"name": name, "state": str(pods[name].state.value),
                                   "reachable": True, "queues": [], "workers": [], "error": None}
            if isinstance(got, BackendUnavailable | RedisError | ConfigurationError):
                row["reachable"] = False
                row["error"] = f"Redis unreachable: {str(got)[:200]}"
            elif isinstance(got, Exception):
                raise got
            else:
                row.update(got)
            out.append(row)
        return out

    def pod_queues(self, pod: str) -> list[dict[str, Any]]:
        if pod not in self.directory.pods():
            raise ApiError(404, f"no pod {pod!r}")
        try:
            return [q.__dict__ for q in Inspector(self.reader(pod)).queues()]
        except (BackendUnavailable, RedisError, UnknownPod) as exc:
            log.warning("pod %s queues unreadable: %s", pod, exc)
            raise ApiError(503, f"pod {pod}'s Redis is unreachable",
                           {"Retry-After": str(self.settings.retry_after_unavailable_s)}) from None

    def migrations(self) -> dict[str, Any]:
        """What `podjobs migrations status --json` prints (read from ZooKeeper)."""
        from podjobs.pods.zk import KazooException
        from podjobs.scheduler.report import collect

        try:
            status: dict[str, Any] = iso_times(collect(self.directory.zk))
            return status
        except KazooException as exc:
            log.warning("migration status unreadable: %r", exc)
            raise ApiError(503, "ZooKeeper is unreachable; migration status unknown",
                           {"Retry-After": str(self.settings.retry_after_unavailable_s)}) from None

    def metrics_registry(self) -> Any:
        """A prometheus_client registry of every pod's gauges (read with this service's
        short-timeout readers) and of the migration rollout."""
        from prometheus_client.registry import CollectorRegistry

        from podjobs.iteration.metrics import IterationCollector
        from podjobs.podmetrics import PodCollector
        from podjobs.scheduler.metrics import MigrationCollector

        registry = CollectorRegistry()
        pods = lambda: {p: self.reader(p) for p in self.directory.pods()}  # noqa: E731
        registry.register(PodCollector(pods))
        registry.register(IterationCollector(pods))
        registry.register(MigrationCollector(self.directory.zk))
        return registry

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "zookeeper": "disconnected" if self.directory.stale else "connected",
                "pods": len(self.directory.pods())}
