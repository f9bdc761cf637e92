"""`podjobs web`: the dashboard alone (no /v1 API), with /healthz and /readyz."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from podjobs.surface.api.auth import TokenStore
from podjobs.surface.api.responses import json_response
from podjobs.surface.api.service import Service

from .routes import PREFIX, add_dashboard


def create_web_app(service: Service, tokens: TokenStore, secret: bytes | None = None, *,
                   secure_cookie: bool = False,
                   on_shutdown: Callable[[], None] | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            await run_in_threadpool(on_shutdown)

    app = FastAPI(title="podjobs dashboard", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    add_dashboard(app, service, tokens, secret, secure_cookie=secure_cookie)

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse(f"{PREFIX}/", 307)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return json_response(200, service.health())

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        doc = service.health()
        return json_response(200 if doc["zookeeper"] == "connected" else 503, doc)

    return app
