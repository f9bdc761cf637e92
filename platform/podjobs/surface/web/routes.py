"""The dashboard's pages and forms, under /ui (include_in_schema=False: not in OpenAPI).

    GET  /ui/login, POST /ui/login, POST /ui/logout     operator token -> session cookie
    GET  /ui/                     every pod (graphs from /ui/overview.json, polled)
    GET  /ui/pods/{pod}           one pod's queues and workers
    POST /ui/pods/{pod}           pause or resume one of its queues
    GET  /ui/busy                 what runs now, where, for how long
    GET  /ui/sets/{kind}          retries | scheduled | dead, ?pod= &q= (search)
    POST /ui/sets/{kind}          run now / delete / delete all (confirmed)
    GET  /ui/jobs?id=             a job by id across pods (a tenant's session: its own only)
    GET  /ui/iterations, POST     progress, pause / resume / cancel
    GET  /ui/migrations, POST     revisions x shards, retry / cancel
    GET  /ui/tenants, /ui/periodic
    GET  /ui/static/...           CSS and the live-refresh script (local files)

Every page needs a session (else 303 to the login page); every page but the job page
needs an operator's (a tenant's session gets 403). Every POST needs the session's CSRF
token (else 403). Blocking reads run in the threadpool (plain `def` routes).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from podjobs.surface.api.auth import Principal, TokenStore, digest
from podjobs.surface.api.service import ApiError, Service

from . import session as sessions
from .fleet import Fleet

log = logging.getLogger("podjobs.web")

HERE = Path(__file__).parent
PREFIX = "/ui"
NAV = [("overview", "/ui/", "Overview"), ("busy", "/ui/busy", "Busy"),
       ("retries", "/ui/sets/retries", "Retries"), ("scheduled", "/ui/sets/scheduled", "Scheduled"),
       ("dead", "/ui/sets/dead", "Dead"), ("jobs", "/ui/jobs", "Find a job"),
       ("iterations", "/ui/iterations", "Iterations"), ("migrations", "/ui/migrations", "Migrations"),
       ("tenants", "/ui/tenants", "Tenants"), ("periodic", "/ui/periodic", "Periodic")]


class NeedLogin(Exception):
    pass


def _when(ms_or_s: Any, ms: bool = True) -> str:
    if not ms_or_s:
        return "-"
    t = float(ms_or_s) / (1000 if ms else 1)
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ago(ms_or_s: Any, ms: bool = True) -> str:
    if not ms_or_s:
        return "-"
    d = time.time() - float(ms_or_s) / (1000 if ms else 1)
    s = f"{abs(d):.0f}s" if abs(d) < 120 else f"{abs(d) / 60:.0f}m" if abs(d) < 7200 else f"{abs(d) / 3600:.1f}h"
    return f"{s} ago" if d >= 0 else f"in {s}"


def _dur(s: Any) -> str:
    if s is None or s == "":
        return "-"
    v = float(s)
    return f"{v:.1f}s" if v < 120 else f"{v / 60:.1f}m" if v < 7200 else f"{v / 3600:.1f}h"


def _here(request: Request) -> str:
    """This page's path and query without the message: where a form comes back to."""
    q = [(k, v) for k, v in request.query_params.multi_items() if k != "msg"]
    return request.url.path + ("?" + urlencode(q) if q else "")


def templates() -> Environment:
    env = Environment(loader=PackageLoader("podjobs.surface.web", "templates"),
                      autoescape=select_autoescape(["html"]))
    env.filters.update(when=_when, ago=_ago, dur=_dur, when_s=lambda v: _when(v, ms=False),
                       ago_s=lambda v: _ago(v, ms=False))
    return env


def add_dashboard(app: FastAPI, service: Service, tokens: TokenStore, secret: bytes | None = None,
                  *, secure_cookie: bool = False) -> None:
    """The dashboard on `app` under /ui; `secret` signs session cookies (random when None:
    sessions then end when the server restarts)."""
    key = secret or secrets.token_bytes(32)
    env = templates()
    fleet = Fleet(service)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    def session_of(request: Request) -> tuple[sessions.Session, Principal]:
        s = sessions.unseal(key, request.cookies.get(sessions.COOKIE), time.time())
        p = tokens.principal_of_digest(s.digest) if s is not None else None
        if s is None or p is None:
            raise NeedLogin()
        return s, p

    def page(request: Request, name: str, s: sessions.Session | None, p: Principal | None,
             status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            nav=[] if p is None else NAV if p.operator else [n for n in NAV if n[0] == "jobs"],
            principal=p, csrf=s.csrf if s else "", msg=request.query_params.get("msg", ""),
            path=request.url.path, here=_here(request), **ctx)
        return HTMLResponse(html, status, headers={"Cache-Control": "no-store"})

    def guarded(operator: bool, fn: Callable[..., HTMLResponse]) -> Callable[..., Response]:
        def run(request: Request) -> Response:
            try:
                s, p = session_of(request)
            except NeedLogin:
                nxt = quote(str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""))
                return RedirectResponse(f"{PREFIX}/login?next={nxt}", 303)
            if operator and not p.operator:
                return page(request, "error.html", s, p, 403, title="Operators only",
                            detail="this page needs an operator token; a tenant token sees only "
                                   "its tenant's jobs (Find a job)")
            try:
                return fn(request, s, p, **request.path_params)
            except ApiError as exc:
                return page(request, "error.html", s, p, exc.status_code, title="Cannot do that",
                            detail=exc.detail)
        return run

    def form(request_body: bytes) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(request_body.decode("utf-8", "replace")).items()}

    async def checked_form(request: Request) -> tuple[dict[str, str], Response | None]:
        f = form(await request.body())
        try:
            s, _ = session_of(request)
        except NeedLogin:
            return f, RedirectResponse(f"{PREFIX}/login", 303)
        if not sessions.csrf_ok(s, f.get("csrf")):
            return f, HTMLResponse("403: the form's CSRF token is missing or wrong; reload the "
                                   "page and try again", 403)
        return f, None

    def back(to: str, msg: str) -> RedirectResponse:
        sep = "&" if "?" in to else "?"
        return RedirectResponse(f"{to}{sep}msg={quote(msg)}", 303)

    def safe_next(n: str | None) -> str:
        return n if n and n.startswith(f"{PREFIX}/") and not n.startswith("//") else f"{PREFIX}/"

    # -- login ---------------------------------------------------------------------------

    @app.get(f"{PREFIX}/login", include_in_schema=False)
    def login_page(request: Request) -> Response:
        return page(request, "login.html", None, None, next=safe_next(request.query_params.get("next")),
                    error="")

    @app.post(f"{PREFIX}/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        f = form(await request.body())
        token = f.get("token", "").strip()
        p = tokens.authenticate(f"Bearer {token}") if token else None
        if p is None:
            return page(request, "login.html", None, None, 401, next=safe_next(f.get("next")),
                        error="unknown token")
        s = sessions.new_session(digest(token).hex(), time.time())
        nxt = safe_next(f.get("next")) if p.operator else f"{PREFIX}/jobs"
        r = RedirectResponse(nxt, 303)
        r.set_cookie(sessions.COOKIE, sessions.seal(key, s), max_age=sessions.TTL_S, httponly=True,
                     samesite="strict", secure=secure_cookie, path=PREFIX)
        return r

    @app.post(f"{PREFIX}/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        _, bad = await checked_form(request)
        if bad is not None:
            return bad
        r = RedirectResponse(f"{PREFIX}/login", 303)
        r.delete_cookie(sessions.COOKIE, path=PREFIX)
        return r

    # -- pages ---------------------------------------------------------------------------

    def overview(request: Request, s: sessions.Session, p: Principal) -> HTMLResponse:
        return page(request, "overview.html", s, p, view=fleet.overview(), active="overview")

    def pod_page(request: Request, s: sessions.Session, p: Principal, pod: str) -> HTMLResponse:
        if pod not in fleet.pod_names():
            raise ApiError(404, f"no pod {pod!r}")
        return page(request, "pod.html", s, p, pod=fleet.pod(pod), active="overview")

    def busy(request: Request, s: sessions.Session, p: Principal) -> HTMLResponse:
        return page(request, "busy.html", s, p, got=fleet.busy(), active="busy")

    def set_page(request: Request, s: sessions.Session, p: Principal, kind: str) -> HTMLResponse:
        pod = request.query_params.get("pod", "")
        q = request.query_params.get("q", "")
        got = fleet.listing(kind, pod or None, q)
        return page(request, "set.html", s, p, kind=kind, got=got, pod=pod, q=q,
                    pods=fleet.pod_names(), active=kind)

    def job_page(request: Request, s: sessions.Session, p: Principal) -> HTMLResponse:
        jid = request.query_params.get("id", "").strip()
        found = fleet.job(p, jid) if jid else None
        return page(request, "job.html", s, p, jid=jid, found=found, active="jobs")

    def iterations(request: Request, s: sessions.Session, p: Principal) -> HTMLResponse:
        state = request.query_params.get("state", "")
        return page(request, "iterations.html", s, p, got=fleet.iterations(state or None),
                    state=state, active="iterations")

    def migrations(request: Request, s: sessions.Session, p: Principal) -> HTMLResponse:
        return page(request, "migrations.html", s, p, m=fleet.migrations(), active="migrations")

    def tenants(request: Request, s: sessions.Session, p: Principal) -> HTMLResponse:
        return page(request, "tenants.html", s, p, rows=fleet.tenants(), active="tenants")

    def periodic(request: Request, s: sessions.Session, p: Principal) -> HTMLResponse:
        return page(request, "periodic.html", s, p, rows=fleet.periodic(), active="periodic")

    for path, fn, op in ((f"{PREFIX}/", overview, True), (f"{PREFIX}/pods/{{pod}}", pod_page, True),
                         (f"{PREFIX}/busy", busy, True), (f"{PREFIX}/sets/{{kind}}", set_page, True),
                         (f"{PREFIX}/jobs", job_page, False),
                         (f"{PREFIX}/iterations", iterations, True),
                         (f"{PREFIX}/migrations", migrations, True),
                         (f"{PREFIX}/tenants", tenants, True), (f"{PREFIX}/periodic", periodic, True)):
        app.add_api_route(path, guarded(op, fn), methods=["GET"], include_in_schema=False,
                          response_class=HTMLResponse)

    @app.get(PREFIX, include_in_schema=False)
    def ui_root() -> Response:
        return RedirectResponse(f"{PREFIX}/", 307)

    @app.get(f"{PREFIX}/overview.json", include_in_schema=False)
    def overview_json(request: Request) -> Response:
        try:
            _, p = session_of(request)
        except NeedLogin:
            return JSONResponse({"detail": "log in first"}, 401)
        if not p.operator:
            return JSONResponse({"detail": "operators only"}, 403)
        v = fleet.overview()
        return JSONResponse({"at": v["at"], "pods": [
            {k: r[k] for k in ("name", "state", "reachable", "size", "latency_s", "workers", "busy",
                               "scheduled", "retrying", "stats")} for r in v["pods"]]})

    # -- actions -------------------------------------------------------------------------

    async def run_action(request: Request, to: str, act: Callable[[dict[str, str]], str]) -> Response:
        f, bad = await checked_form(request)
        if bad is not None:
            return bad
        _, p = session_of(request)
        if not p.operator:
            return HTMLResponse("403: operators only", 403)
        from starlette.concurrency import run_in_threadpool

        try:
            msg = await run_in_threadpool(act, f)
        except ApiError as exc:
            msg = f"error: {exc.detail}"
        return back(safe_next(f.get("back")) if f.get("back") else to, msg)

    @app.post(f"{PREFIX}/sets/{{kind}}", include_in_schema=False)
    async def set_action(request: Request, kind: str) -> Response:
        def act(f: dict[str, str]) -> str:
            if f.get("action") == "delete_all" and f.get("confirm") != "yes":
                raise ApiError(400, "delete all needs its confirmation box ticked")
            return fleet.act(kind, f.get("action", ""), f.get("pod", ""), f.get("id", ""))
        return await run_action(request, f"{PREFIX}/sets/{kind}", act)

    @app.post(f"{PREFIX}/pods/{{pod}}", include_in_schema=False)
    async def queue_action(request: Request, pod: str) -> Response:
        return await run_action(request, f"{PREFIX}/pods/{pod}", lambda f: fleet.queue_action(
            f.get("action", ""), pod, f.get("queue", "")))

    @app.post(f"{PREFIX}/iterations", include_in_schema=False)
    async def iteration_action(request: Request) -> Response:
        return await run_action(request, f"{PREFIX}/iterations", lambda f: fleet.iteration_action(
            f.get("action", ""), f.get("pod", ""), f.get("id", "")))

    @app.post(f"{PREFIX}/migrations", include_in_schema=False)
    async def migration_action(request: Request) -> Response:
        return await run_action(request, f"{PREFIX}/migrations", lambda f: fleet.migration_action(
            f.get("action", ""), f.get("revision", ""), f.get("pod") or None))
