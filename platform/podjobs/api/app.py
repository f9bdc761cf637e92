"""The FastAPI application: routes, authentication, error answers, the OpenAPI document.

    POST   /v1/tenants/{tenant}/jobs   enqueue: 202 + Location of the status monitor
                                        (or, when asked with Expect/Prefer, the final answer or 417)
    GET    /v1/jobs/{id}               status monitor: 200, or 303 to the created resource
    DELETE /v1/jobs/{id}               cancel a job that has not started: 200, or 409
    GET    /v1/pods                    operator: pods, state, queue sizes, live workers
    GET    /v1/pods/{pod}/queues       operator: one pod's queues
    GET    /healthz                    liveness (no token)

`create_app(service, tokens)` builds it; `podjobs api` (api/cli.py) serves it with uvicorn.
Blocking work (Redis, the directory) runs in the threadpool; a synchronous request waits
for its job by polling the job's status record with `asyncio.sleep` between reads (2 ms
growing to 50 ms), so a waiting request holds no thread.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from podjobs.api import models
from podjobs.api.auth import Principal, TokenStore
from podjobs.api.monitor import (
    FINAL_STATES,
    Answer,
    BadRequest,
    Demand,
    Mode,
    Unprocessable,
    accepted_answer,
    final_answer,
    monitor_answer,
    parse_demand,
    parse_enqueue,
    refusal,
)
from podjobs.api.service import ApiError, Service, is_async_only, not_found_tenant

log = logging.getLogger("podjobs.api")

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

EXPECT_DOC = ("`202-accepted`: asynchronous only (202 at once). `200-ok`, `201-created` or "
              "`204-no-content`: synchronous: the final answer within `Prefer: wait=N` (or the "
              "server's default wait), else 417. Any other expectation: 417.")
PREFER_DOC = ("`wait=N`: synchronous within N seconds (else 417). `respond-async, wait=N`: wait "
              "up to N seconds for the final answer, then 202. `Expect: 202-accepted` overrides it.")


def _problem(code: int, what: str) -> dict[str, Any]:
    return {"model": models.Problem, "description": what}


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    if body is None:
        return Response(status_code=status, headers=headers)
    return Response(_dumps(body), status_code=status, headers=headers, media_type="application/json")


def answer(a: Answer) -> Response:
    return json_response(a.status, a.body, a.headers)


def create_app(service: Service, tokens: TokenStore, *,
               on_shutdown: Callable[[], None] | None = None) -> FastAPI:
    settings = service.settings
    job_names = sorted(service._jobs())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            await run_in_threadpool(on_shutdown)

    app = FastAPI(
        title="podjobs", version="1",
        description="Enqueue background jobs for a tenant, watch them through status monitors, "
                    "operate pods. Every /v1 request carries `Authorization: Bearer TOKEN`; a "
                    "tenant token sees only its tenant (another tenant's jobs answer 404).",
        lifespan=lifespan,
    )
    bearer = HTTPBearer(auto_error=False, description="a tenant or operator token")

    def who(creds: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> Principal:
        p = tokens.authenticate(f"Bearer {creds.credentials}" if creds is not None else None)
        if p is None:
            raise ApiError(401, "a valid bearer token is required (Authorization: Bearer TOKEN)",
                           {"WWW-Authenticate": 'Bearer realm="podjobs"'})
        return p

    Who = Annotated[Principal, Depends(who)]

    def operator(p: Who) -> Principal:
        if not p.operator:
            raise ApiError(403, "this endpoint needs an operator token")
        return p

    Operator = Annotated[Principal, Depends(operator)]

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> Response:
        return json_response(exc.status_code, {"detail": exc.detail, **exc.extra}, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))}
                  for e in exc.errors()]
        return json_response(422, {"detail": "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}"
                                                       for e in errors), "errors": errors})

    # -- enqueue -----------------------------------------------------------------------

    @app.post(
        "/v1/tenants/{tenant}/jobs", status_code=202, response_model=models.JobStatus,
        summary="Enqueue a job for a tenant",
        response_description="Accepted: Location is the job's status monitor",
        responses={
            200: {"model": models.JobStatus, "description": "synchronous: the job finished without "
                  "declaring a resource (or failed, died, was cancelled: see state and error)"},
            201: {"model": models.JobStatus, "description": "synchronous: the job succeeded and "
                  "created the resource in Location"},
            204: {"description": "synchronous, Expect: 204-no-content: the job succeeded, no result"},
            400: _problem(400, "the body is not valid JSON"),
            401: _problem(401, "no or an unknown bearer token"),
            404: _problem(404, "unknown tenant (or not the token's tenant)"),
            409: _problem(409, "an identical unique job is already pending"),
            413: _problem(413, "the body (or the job's payload) is too large"),
            415: _problem(415, "the body is not JSON"),
            417: _problem(417, "a synchronous answer was demanded and cannot be given"),
            422: _problem(422, "unknown job, arguments that do not fit, or a malformed request"),
            503: _problem(503, "the pod is draining, the tenant is moving, or the pod's Redis is "
                               "unreachable (see Retry-After); nothing was enqueued. When the "
                               "pod's Redis did not answer in time the job may have been "
                               "enqueued: Location then names its status monitor"),
        },
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": models.enqueue_body_schema(job_names)}}}},
    )
    async def enqueue(request: Request, tenant: str, p: Who,
                      expect: Annotated[str | None, Header(description=EXPECT_DOC)] = None,
                      prefer: Annotated[str | None, Header(description=PREFER_DOC)] = None,
                      ) -> Response:
        if not p.may_act_for(tenant):
            raise not_found_tenant(tenant)
        demand = parse_demand(expect, prefer, default_wait_s=settings.default_wait_s,
                              max_wait_s=settings.max_wait_s)
        if demand.refusal:
            raise ApiError(417, demand.refusal + "; nothing was enqueued")
        ctype = request.headers.get("content-type", "")
        if ctype and "json" not in ctype.lower():
            raise ApiError(415, f"the body must be application/json, not {ctype[:100]!r}")
        body = await _read_body(request, settings.max_body_bytes)
        try:
            req = parse_enqueue(body)
        except BadRequest as exc:
            raise ApiError(400, str(exc)) from None
        except Unprocessable as exc:
            raise ApiError(422, exc.detail, extra={"errors": exc.errors}) from None
        jd = service.job(req.job)
        service.check_arguments(jd, req)
        async_only = is_async_only(jd)
        why = refusal(async_only, req.delay, demand)
        if why:
            raise ApiError(417, why + "; nothing was enqueued")
        view, pod = await run_in_threadpool(service.enqueue, p, tenant, jd, req)
        if demand.mode is Mode.ASYNC or async_only:
            return answer(accepted_answer(view))
        return await _wait(p, view, pod, demand)

    async def _wait(p: Principal, view: dict[str, Any], pod: str, demand: Demand) -> Response:
        job_id = view["id"]
        try:
            final = await _wait_final(pod, job_id, demand.wait_s)
            if final is not None:
                return answer(final_answer(final, demand))
            if demand.mode is Mode.WAIT_THEN_ASYNC:
                return _accepted_async(view)
            return await run_in_threadpool(_expectation_failed, p, job_id, demand)
        except Exception as exc:  # the job is enqueued: never answer as if nothing was
            log.warning("job %s is enqueued, but waiting for it failed: %s", job_id, exc)
            return _state_unknown(view, demand, exc)

    def _accepted_async(view: dict[str, Any]) -> Response:
        a = accepted_answer(view)
        return json_response(a.status, a.body, {**a.headers, "Preference-Applied": "respond-async"})

    def _state_unknown(view: dict[str, Any], demand: Demand, exc: Exception) -> Response:
        """The job was enqueued, then its state could not be read: 202 for respond-async,
        else 417; both with Location of its monitor (the caller must not enqueue it again)."""
        if demand.mode is Mode.WAIT_THEN_ASYNC:
            return _accepted_async(view)
        why = exc.detail if isinstance(exc, ApiError) else f"{type(exc).__name__}: {exc}"
        return json_response(417, {
            "detail": f"the job was enqueued, but its state could not be read ({why[:200]}); it "
                      f"may run or have run: its status monitor is in Location. Do not enqueue it "
                      f"again", "job": view},
            {"Location": view["monitor"]})

    async def _wait_final(pod: str, job_id: str, timeout: float) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.002
        while True:
            try:
                state = await run_in_threadpool(service.read_state, pod, job_id)
            except Exception as exc:  # keep waiting: the job is enqueued, the answer may come
                log.warning("waiting for job %s: %s", job_id, exc)
                state = ""
            if state in FINAL_STATES:
                return await run_in_threadpool(_final_view, job_id)
            left = deadline - loop.time()
            if left <= 0:
                return None
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 1.5, 0.05)

    def _final_view(job_id: str) -> dict[str, Any]:
        return service.find(Principal("api", operator=True), job_id).view(job_id)

    def _expectation_failed(p: Principal, job_id: str, demand: Demand) -> Response:
        """The job did not finish in time: cancel it if it has not started (then nothing
        runs), else say where its monitor is."""
        view = service.find(p, job_id).view(job_id)
        if view["state"] in FINAL_STATES:
            return answer(final_answer(view, demand))
        wait = f"{demand.wait_s:g}"
        if view["state"] == "queued":
            try:
                _, cancelled = service.cancel(p, job_id)
                return json_response(417, {
                    "detail": f"the job did not start within {wait} s; it was cancelled and will "
                              f"not run. Retry later, or send Expect: 202-accepted",
                    "job": cancelled})
            except ApiError as exc:
                if exc.status_code != 409:
                    raise
                view = service.find(p, job_id).view(job_id)
                if view["state"] in FINAL_STATES:
                    return answer(final_answer(view, demand))
        return json_response(417, {
            "detail": f"the job did not finish within {wait} s and goes on asynchronously; its "
                      f"status monitor is in Location", "job": view},
            {"Location": view["monitor"]})

    # -- status monitor and cancel -----------------------------------------------------------

    @app.get(
        "/v1/jobs/{job_id}", response_model=models.JobStatus, summary="A job's status monitor",
        response_description="the job's state, attempts, timestamps, progress and error",
        responses={
            303: {"model": models.JobStatus,
                  "description": "the job succeeded and created the resource in Location"},
            401: _problem(401, "no or an unknown bearer token"),
            404: _problem(404, "unknown job (or another tenant's)"),
            503: _problem(503, "a pod that may hold the job cannot be read now"),
        },
    )
    def get_job(job_id: str, p: Who) -> Response:
        return answer(monitor_answer(service.find(p, job_id).view(job_id)))

    @app.delete(
        "/v1/jobs/{job_id}", response_model=models.JobStatus,
        summary="Cancel a job that has not started",
        response_description="cancelled (now or before): the job's document",
        responses={
            401: _problem(401, "no or an unknown bearer token"),
            404: _problem(404, "unknown job (or another tenant's)"),
            409: _problem(409, "the job has started (or finished) and cannot be cancelled"),
            503: _problem(503, "the job's pod cannot be reached"),
        },
    )
    def cancel_job(job_id: str, p: Who) -> Response:
        _, view = service.cancel(p, job_id)
        return json_response(200, view)

    # -- operators ------------------------------------------------------------------------------

    @app.get("/v1/pods", response_model=list[models.PodInfo], summary="Pods (operator)",
             responses={401: _problem(401, "no or an unknown bearer token"),
                        403: _problem(403, "not an operator token")})
    def list_pods(p: Operator) -> Response:
        return json_response(200, service.pods())

    @app.get("/v1/pods/{pod}/queues", response_model=list[models.QueueInfo],
             summary="One pod's queues (operator)",
             responses={401: _problem(401, "no or an unknown bearer token"),
                        403: _problem(403, "not an operator token"),
                        404: _problem(404, "unknown pod"),
                        503: _problem(503, "the pod's Redis is unreachable")})
    def pod_queues(pod: str, p: Operator) -> Response:
        return json_response(200, service.pod_queues(pod))

    @app.get("/v1/migrations", response_model=models.MigrationsStatus,
             summary="Migration rollout per shard (operator): podjobs migrations status --json",
             responses={401: _problem(401, "no or an unknown bearer token"),
                        403: _problem(403, "not an operator token"),
                        503: _problem(503, "ZooKeeper is unreachable")})
    def migrations(p: Operator) -> Response:
        return json_response(200, service.migrations())

    @app.get("/healthz", response_model=models.Health, summary="Liveness (no token needed)")
    def healthz() -> Response:
        return json_response(200, service.health())

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes (before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {int(declared)} bytes, over the limit of {limit} bytes; "
                            f"store large data elsewhere and pass its id")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over the limit of {limit} bytes; store large data "
                                f"elsewhere and pass its id")
        chunks.append(chunk)
    return b"".join(chunks)
