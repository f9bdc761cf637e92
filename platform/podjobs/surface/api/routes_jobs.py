"""The tenant routes: enqueue, the status monitor, cancel.

    POST   /v1/tenants/{tenant}/jobs   enqueue: 202 + Location of the status monitor
                                        (or, when asked with Expect/Prefer, the final answer or 417)
    GET    /v1/jobs/{id}               status monitor: 200, or 303 to the created resource
    DELETE /v1/jobs/{id}               cancel a job that has not started: 200, or 409

(No `from __future__ import annotations`: FastAPI reads the routes' annotations, which
name `Who`, made in `add_job_routes`.)
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from podjobs.surface.api import models
from podjobs.surface.api.answers import accepted_answer, monitor_answer
from podjobs.surface.api.auth import Principal
from podjobs.surface.api.body import BadRequest, Unprocessable, parse_enqueue
from podjobs.surface.api.negotiation import Mode, parse_demand, refusal
from podjobs.surface.api.responses import answer, json_response, problem
from podjobs.surface.api.service import ApiError, Service, is_async_only, not_found_tenant
from podjobs.surface.api.waiting import wait_answer

EXPECT_DOC = ("`202-accepted`: asynchronous only (202 at once). `200-ok`, `201-created` or "
              "`204-no-content`: synchronous: the final answer within `Prefer: wait=N` (or the "
              "server's default wait), else 417. Any other expectation: 417.")
PREFER_DOC = ("`wait=N`: synchronous within N seconds (else 417). `respond-async, wait=N`: wait "
              "up to N seconds for the final answer, then 202. `Expect: 202-accepted` overrides it.")


def add_schema_defs(app: FastAPI, defs: dict[str, Any]) -> None:
    """Put the argument schemas' nested models and enums in the OpenAPI document's
    components (where their `$ref`s point: argschema.REF_TEMPLATE)."""
    if not defs:
        return
    build = app.openapi

    def openapi() -> dict[str, Any]:
        doc = build()
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in defs.items():
            schemas.setdefault(name, schema)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def add_job_routes(app: FastAPI, service: Service, who: Callable[..., Principal]) -> None:
    """Enqueue, monitor and cancel on `app`; `who` is the dependency that authenticates
    the caller."""
    settings = service.settings
    job_names = sorted(n for n, jd in service._jobs().items() if jd.options.api)
    arg_schemas = [service.arg_schema(service._jobs()[n]) for n in job_names]
    add_schema_defs(app, {k: v for s in arg_schemas for k, v in s.defs.items()})
    Who = Annotated[Principal, Depends(who)]

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
            400: problem(400, "the body is not valid JSON"),
            401: problem(401, "no or an unknown bearer token"),
            404: problem(404, "unknown tenant (or not the token's tenant)"),
            409: problem(409, "an identical unique job is already pending"),
            413: problem(413, "the body (or the job's payload) is too large"),
            415: problem(415, "the body is not JSON"),
            417: problem(417, "a synchronous answer was demanded and cannot be given"),
            422: problem(422, "unknown job, arguments that do not fit, or a malformed request"),
            429: problem(429, "the tenant is over its enqueue rate or pending-jobs quota "
                               "(see Retry-After); nothing was enqueued"),
            503: problem(503, "the pod is draining, the tenant is moving, or the pod's Redis is "
                               "unreachable (see Retry-After); nothing was enqueued. When the "
                               "pod's Redis did not answer in time the job may have been "
                               "enqueued: Location then names its status monitor"),
        },
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": models.enqueue_body_schema(
                job_names, [s.body_schema() for s in arg_schemas])}}}},
    )
    async def enqueue(request: Request, tenant: str, p: Who,
                      expect: Annotated[str | None, Header(description=EXPECT_DOC)] = None,
                      prefer: Annotated[str | None, Header(description=PREFER_DOC)] = None,
                      ) -> Response:
        if not p.may_act_for(tenant):
            raise not_found_tenant(tenant)
        if not p.may("enqueue"):
            raise ApiError(403, f"the token {p.name!r} may not enqueue (its scopes: "
                                f"{', '.join(sorted(p.scopes))})")
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
        jd = service.job(req.job, req.queue, p)
        service.check_arguments(jd, req)
        async_only = is_async_only(jd)
        why = refusal(async_only, req.delay, demand)
        if why:
            raise ApiError(417, why + "; nothing was enqueued")
        view, pod = await run_in_threadpool(service.enqueue, p, tenant, jd, req)
        if demand.mode is Mode.ASYNC or async_only:
            return answer(accepted_answer(view))
        return await wait_answer(service, p, view, pod, demand)

    @app.get(
        "/v1/jobs/{job_id}", response_model=models.JobStatus, summary="A job's status monitor",
        response_description="the job's state, attempts, timestamps, progress and error",
        responses={
            303: {"model": models.JobStatus,
                  "description": "the job succeeded and created the resource in Location"},
            401: problem(401, "no or an unknown bearer token"),
            404: problem(404, "unknown job (or another tenant's)"),
            503: problem(503, "a pod that may hold the job cannot be read now"),
        },
    )
    def get_job(job_id: str, p: Who) -> Response:
        _scope(p, "read")
        return answer(monitor_answer(service.find(p, job_id).view(job_id)))

    @app.options("/v1/jobs/{job_id}", include_in_schema=False, status_code=204)
    def job_options(job_id: str) -> Response:
        return Response(status_code=204, headers={"Allow": "GET, DELETE, OPTIONS"})

    @app.options("/v1/tenants/{tenant}/jobs", include_in_schema=False, status_code=204)
    def enqueue_options(tenant: str) -> Response:
        return Response(status_code=204, headers={"Allow": "POST, OPTIONS"})

    @app.delete(
        "/v1/jobs/{job_id}", response_model=models.JobStatus,
        summary="Cancel a job that has not started",
        response_description="cancelled (now or before): the job's document",
        responses={
            401: problem(401, "no or an unknown bearer token"),
            404: problem(404, "unknown job (or another tenant's)"),
            409: problem(409, "the job has started (or finished) and cannot be cancelled"),
            503: problem(503, "the job's pod cannot be reached"),
        },
    )
    def cancel_job(job_id: str, p: Who) -> Response:
        _scope(p, "cancel")
        _, view = service.cancel(p, job_id)
        return json_response(200, view)


def _scope(p: Principal, scope: str) -> None:
    if not p.may(scope):
        raise ApiError(403, f"the token {p.name!r} lacks the {scope!r} scope (its scopes: "
                            f"{', '.join(sorted(p.scopes))})")


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
