"""The FastAPI application: routes, authentication, error answers, the OpenAPI document.

    POST   /v1/tenants/{tenant}/jobs   enqueue: 202 + Location of the status monitor
                                        (or, when asked with Expect/Prefer, the final answer or 417)
    GET    /v1/jobs/{id}               status monitor: 200, or 303 to the created resource
    DELETE /v1/jobs/{id}               cancel a job that has not started: 200, or 409
    GET    /v1/pods                    operator: pods, state, queue sizes, live workers
    GET    /v1/pods/{pod}/queues       operator: one pod's queues
    GET    /v1/migrations              operator: the migration rollout
    GET    /healthz                    liveness (no token)
    GET    /readyz                     readiness: 503 while ZooKeeper is away (no token)
    GET    /docs                       Swagger UI, from local files (docs.py)

`create_app(service, tokens)` builds it: authentication (`who`, `operator`), the error
answers, and the route groups of routes_jobs and routes_ops; `podjobs api`
(surface/cmd_api.py) serves it with uvicorn. Blocking work (Redis, the directory) runs in
the threadpool; a synchronous request's wait is waiting.py's.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from podjobs.surface.api.auth import Principal, TokenStore
from podjobs.surface.api.docs import add_local_docs
from podjobs.surface.api.responses import json_response
from podjobs.surface.api.routes_jobs import add_job_routes
from podjobs.surface.api.routes_ops import add_operator_routes
from podjobs.surface.api.service import ApiError, Service


def create_app(service: Service, tokens: TokenStore, *,
               on_shutdown: Callable[[], None] | None = None) -> FastAPI:
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
        lifespan=lifespan, docs_url=None, redoc_url=None,
    )
    add_local_docs(app)
    who, operator = authentication(tokens)
    add_error_answers(app)
    add_job_routes(app, service, who)
    add_operator_routes(app, service, operator)
    return app


def authentication(tokens: TokenStore) -> tuple[Callable[..., Principal], Callable[..., Principal]]:
    """The dependencies `who` (any valid token, else 401) and `operator` (an operator
    token, else 403)."""
    bearer = HTTPBearer(auto_error=False, description="a tenant or operator token")

    def who(creds: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> Principal:
        p = tokens.authenticate(f"Bearer {creds.credentials}" if creds is not None else None)
        if p is None:
            raise ApiError(401, "a valid bearer token is required (Authorization: Bearer TOKEN)",
                           {"WWW-Authenticate": 'Bearer realm="podjobs"'})
        return p

    def operator(p: Annotated[Principal, Depends(who)]) -> Principal:
        if not p.operator:
            raise ApiError(403, "this endpoint needs an operator token")
        return p

    return who, operator


def add_error_answers(app: FastAPI) -> None:
    """`ApiError` and request validation errors as `{"detail": ...}` JSON answers."""

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> Response:
        return json_response(exc.status_code, {"detail": exc.detail, **exc.extra}, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))}
                  for e in exc.errors()]
        return json_response(422, {"detail": "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}"
                                                       for e in errors), "errors": errors})
