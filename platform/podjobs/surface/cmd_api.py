"""`podjobs api`: serve the HTTP API with uvicorn; `podjobs api token`: make a token.

    podjobs api --host 127.0.0.1 --port 8080 --app myapp --tokens tokens.json [--zk HOSTS/ROOT]
    podjobs api token --tenant shop-17        (or --operator) prints a token and its file entry

ZooKeeper: `--zk`, else `$PODJOBS_ZK`, else the topology file of `podjobs dev up`. Tokens:
`--tokens FILE`, else `$PODJOBS_API_TOKENS` (format in podjobs.surface.api.auth). With `--workers N`
N server processes each build the app and listen on their own SO_REUSEPORT socket.
The dashboard (podjobs.surface.web) is served under /ui unless `--no-ui`; `podjobs web`
(cmd_web) serves it alone. Its session cookies are signed with `--session-secret-file` or
`$PODJOBS_WEB_SECRET`, else a random key made at start (logins then end on a restart).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
from dataclasses import asdict
from typing import Any

from podjobs.errors import ConfigurationError

from .options import (
    APP_HINT,
    Commands,
    add_log_args,
    app_modules,
    import_apps,
    open_zk,
    print_json,
    resolve_zk_spec,
    setup_logs,
)


def build_app(settings_doc: dict[str, Any]) -> Any:
    """The FastAPI app from the JSON-able settings `cmd_api` made (also in uvicorn workers)."""
    from podjobs.pods.router import connect
    from podjobs.surface.api.app import create_app
    from podjobs.surface.api.auth import TokenStore
    from podjobs.surface.api.service import Service, Settings

    doc = dict(settings_doc)
    zk, tokens_path = doc.pop("zk"), doc.pop("tokens")
    doc.pop("log_format", None)
    mode, secret = doc.pop("mode", "api"), doc.pop("secret", None)
    secure = bool(doc.pop("secure_cookies", False))
    settings = Settings(**doc)
    import_apps(settings.app_modules, APP_HINT)
    tokens = TokenStore.from_env(tokens_path)
    client = connect(zk)
    service = Service(client.router, settings)

    def shutdown() -> None:
        service.close()
        client.close()

    ready = lambda: service.health()["zookeeper"] == "connected"  # noqa: E731
    if mode == "web":
        from podjobs.surface.web.app import create_web_app

        web = create_web_app(service, tokens, bytes.fromhex(secret) if secret else None,
                             secure_cookie=secure, on_shutdown=shutdown)
        web.state.ready = ready
        return web
    app = create_app(service, tokens, on_shutdown=shutdown)
    app.state.ready = ready
    if mode == "api":
        from podjobs.surface.web.routes import add_dashboard

        add_dashboard(app, service, tokens, bytes.fromhex(secret) if secret else None,
                      secure_cookie=secure)
    return app


def session_secret(path: str | None) -> str:
    """The dashboard's cookie key (hex): from the file, $PODJOBS_WEB_SECRET, or random."""
    import secrets

    if path:
        try:
            raw = open(path, "rb").read().strip()
        except OSError as exc:
            raise ConfigurationError(f"--session-secret-file {path}: {exc}") from None
        if len(raw) < 16:
            raise ConfigurationError(f"--session-secret-file {path}: at least 16 bytes, please")
        return raw.hex()
    env = os.environ.get("PODJOBS_WEB_SECRET", "")
    return env.encode().hex() if len(env) >= 16 else secrets.token_hex(32)


#: what `podjobs api serve` and `podjobs web` import beyond podjobs' own dependencies
API_EXTRA = ("fastapi", "uvicorn", "jinja2", "swagger_ui_bundle")


def require_api_extra(command: str) -> None:
    """ConfigurationError (exit 2) naming the missing packages and the install line, when the
    `api` extra is not installed (a worker-only install: `pip install podjobs`)."""
    import importlib.util

    missing = [m for m in API_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigurationError(
            f"podjobs {command} needs the HTTP stack, which is not installed here (missing: "
            f"{', '.join(missing)}); install it with: pip install 'podjobs[api]' (workers, the "
            f"scheduler and the other commands do not need it)")


def cmd_api(args: argparse.Namespace) -> int:
    if args.action == "token":
        return cmd_token(args)
    require_api_extra("web" if getattr(args, "mode", "api") == "web" else "api")
    import uvicorn

    from podjobs.surface.api.auth import TokenStore
    from podjobs.surface.api.service import Settings

    setup_logs(args)
    TokenStore.from_env(args.tokens)  # fail here, with the message, not in a worker
    settings = Settings(max_body_bytes=int(args.max_body_kb * 1024), max_wait_s=args.max_wait,
                        default_wait_s=min(args.sync_wait, args.max_wait),
                        status_ttl_s=args.status_ttl, read_timeout_s=args.read_timeout,
                        app_modules=app_modules(args.app),
                        refuse_unserved_queues=not getattr(args, "allow_unserved_queues", False),
                        audit_log=getattr(args, "audit_log", None))
    doc = {**asdict(settings), "zk": resolve_zk_spec(args.zk), "log_format": args.log_format,
           "tokens": args.tokens or os.environ.get("PODJOBS_API_TOKENS"),
           "mode": getattr(args, "mode", "api") if not getattr(args, "no_ui", False) else "api-only",
           "secret": session_secret(args.session_secret_file),
           "secure_cookies": args.secure_cookies}
    common: dict[str, Any] = dict(host=args.host, port=args.port, log_level=args.log_level.lower(),
                                  access_log=args.access_log, server_header=False,
                                  timeout_graceful_shutdown=5)
    if args.workers > 1:
        _serve_processes(doc, common, args.workers)
    else:
        from podjobs.sdnotify import Pinger

        app = build_app(doc)
        server = uvicorn.Server(uvicorn.Config(app, **common))
        # systemd: READY once uvicorn listens, WATCHDOG while ZooKeeper is connected
        pinger = Pinger(lambda: server.started and app.state.ready(),
                        status=f"{args.command} on {args.host}:{args.port}").start()
        try:
            server.run()
        finally:
            pinger.stop()
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT, so that each server process has its own and the
    kernel spreads connections over them (uvicorn's --workers shares one socket, from which
    one process tends to accept every connection). IPPROTO_TCP, so that asyncio sets
    TCP_NODELAY on its connections (without it a keep-alive answer, headers and body
    written apart, waits ~40 ms for a delayed ACK)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc}") from None
    return sock


def _server_process(doc: dict[str, Any], common: dict[str, Any], parent: int) -> None:
    import signal

    import uvicorn

    try:  # Linux: stop with the parent, even when it is killed with SIGKILL
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        return

    from podjobs import logs

    logs.setup(str(common["log_level"]), str(doc.get("log_format", "text")))
    sock = _listen(common["host"], common["port"])
    uvicorn.Server(uvicorn.Config(build_app(doc), **common)).run(sockets=[sock])


def _serve_processes(doc: dict[str, Any], common: dict[str, Any], n: int) -> None:
    """`--workers N`: N server processes, each with its own SO_REUSEPORT socket; one that
    dies is started again (at most once a second); SIGTERM/SIGINT stop them all."""
    import multiprocessing
    import signal
    import threading
    import time

    probe = _listen(common["host"], common["port"])  # the port is free (for us): fail early
    ctx = multiprocessing.get_context("spawn")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def start() -> Any:
        p = ctx.Process(target=_server_process, args=(doc, common, os.getpid()), name="podjobs-api")
        p.start()
        return p

    procs = [start() for _ in range(n)]
    probe.close()
    from podjobs.sdnotify import Pinger

    pinger = Pinger(lambda: all(p.is_alive() for p in procs), status=f"{n} server processes").start()
    last_restart = 0.0
    try:
        while not stop.wait(0.5):
            for i, p in enumerate(procs):
                if not p.is_alive() and time.monotonic() - last_restart >= 1.0:
                    logging.getLogger("podjobs.api").warning(
                        "server process %s exited with %s; starting another", p.pid, p.exitcode)
                    last_restart = time.monotonic()
                    procs[i] = start()
    finally:
        pinger.stop()
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()


def _check_tenant(args: argparse.Namespace) -> None:
    """`UnknownTenant` unless the tenant is in the directory (a token for a tenant that
    does not exist would answer 404 to everything)."""
    from podjobs.pods.topology import TopologyStore

    try:
        spec = resolve_zk_spec(args.zk)
    except ConfigurationError:
        raise ConfigurationError(
            f"api token --tenant {args.tenant}: which ZooKeeper holds the directory? pass --zk "
            f"(or set PODJOBS_ZK), or --no-check to make the token without looking") from None
    zk = open_zk(spec)
    try:
        TopologyStore(zk).where(args.tenant)  # UnknownTenant naming how to assign it
    finally:
        zk.stop()


def _token_file(args: argparse.Namespace) -> Any:
    from podjobs.surface.api.tokenfile import TokenFile

    path = args.tokens or os.environ.get("PODJOBS_API_TOKENS")
    if not path:
        raise ConfigurationError(f"podjobs api token {args.op}: which token file? pass --tokens "
                                 f"FILE or set PODJOBS_API_TOKENS")
    return TokenFile(path)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def cmd_token_file(args: argparse.Namespace) -> int:
    """`api token add|list|revoke|rotate`: the token file, managed (tokenfile.py)."""
    tf = _token_file(args)
    if args.op == "list":
        rows = tf.entries()
        if args.json:
            print_json(rows)
        else:
            from podjobs.table import render

            print(render(["name", "tenant", "scopes", "jobs", "expires"],
                         [[r.get("name", ""), "(operator)" if r.get("operator") else r.get("tenant", ""),
                           ",".join(r.get("scopes", [])), ",".join(r.get("jobs") or []) or "any",
                           r.get("expires", "never")] for r in rows]) if rows else "no tokens")
        return 0
    name = args.target or args.name
    if not name:
        raise ConfigurationError(f"podjobs api token {args.op} NAME: which entry?")
    if args.op == "revoke":
        tf.revoke(name)
        if args.json:
            print_json({"name": name, "revoked": True})
        else:
            print(f"revoked {name!r}: the API refuses its token within a second")
        return 0
    if args.op == "rotate":
        token = tf.rotate(name)
    else:
        if bool(args.tenant) == bool(args.operator):
            raise ConfigurationError("podjobs api token add needs --tenant TENANT or --operator")
        if args.tenant and not args.no_check:
            _check_tenant(args)
        token = tf.add(name, tenant=args.tenant, operator=args.operator, scopes=_csv(args.scopes),
                       jobs=_csv(args.jobs), expires=args.expires)
    if args.json:
        print_json({"name": name, "token": token})
    else:
        print(f"token for {name!r} (give it to the client; only its SHA-256 is stored): {token}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from podjobs.surface.api.auth import entry_for, new_token

    if args.op is not None:
        return cmd_token_file(args)
    if bool(args.tenant) == bool(args.operator):
        raise ConfigurationError("podjobs api token needs --tenant TENANT or --operator")
    if args.tenant and not args.no_check:
        _check_tenant(args)
    token = new_token()
    entry = entry_for(token, tenant=args.tenant, operator=args.operator, name=args.name)
    if args.json:
        print_json({"token": token, "entry": entry})
    else:
        print(f"token (give it to the client; it is not stored): {token}")
        print(f'entry (add it to the "tokens" list of the token file): {json.dumps(entry)}')
    return 0


def add_server_args(p: argparse.ArgumentParser, port: int) -> None:
    """Options `podjobs api` and `podjobs web` share."""
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=port)
    p.add_argument("--zk", metavar="HOSTS[/ROOT]",
                   help="ZooKeeper (default $PODJOBS_ZK, else the topology file's)")
    p.add_argument("--tokens", metavar="FILE", help="token file (default $PODJOBS_API_TOKENS)")
    p.add_argument("--app", action="append", metavar="MODULE",
                   help="module(s) that define the jobs (repeat or comma-separate)")
    p.add_argument("--read-timeout", type=float, default=1.0,
                   help="seconds a status monitor or operator read of a pod may take to connect "
                        "and to answer; an unresponsive pod costs a request at most this "
                        "(default 1)")
    p.add_argument("--session-secret-file", metavar="FILE",
                   help="dashboard: key that signs session cookies (default $PODJOBS_WEB_SECRET, "
                        "else random at start: logins end on a restart)")
    p.add_argument("--secure-cookies", action="store_true",
                   help="dashboard: send the session cookie over HTTPS only")
    p.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    add_log_args(p)


def register(cmds: Commands) -> None:
    p = cmds.command(
        "api", "serve the HTTP API (or: api token, to make a token)", cmd_api,
        description="Serve the HTTP API: enqueue with 202 + status monitors, Expect/Prefer, "
                    "operator endpoints. 'podjobs api token --tenant T' makes a token.",
        noun="token")
    p.add_argument("action", nargs="?", choices=("serve", "token"), default="serve")
    p.add_argument("op", nargs="?", choices=("add", "list", "revoke", "rotate"),
                   help="api token: manage the token file (without it: print a token and its entry)")
    p.add_argument("target", nargs="?", metavar="NAME", help="api token revoke|rotate: the entry")
    add_server_args(p, 8080)
    p.add_argument("--no-ui", action="store_true", help="do not serve the dashboard under /ui")
    p.add_argument("--allow-unserved-queues", action="store_true",
                   help="accept jobs for a queue no live worker of the pod serves (they wait; "
                        "default: 422 naming the queues served)")
    p.add_argument("--max-wait", type=float, default=30.0,
                   help="most seconds a synchronous request waits (default 30)")
    p.add_argument("--sync-wait", type=float, default=10.0,
                   help="seconds an Expect: 200-ok|201-created|204-no-content request waits "
                        "without Prefer: wait (default 10)")
    p.add_argument("--max-body-kb", type=float, default=512, help="largest body (default 512 KiB)")
    p.add_argument("--status-ttl", type=int, default=86400,
                   help="seconds a finished job's status is kept (default 86400)")
    p.add_argument("--tenant", help="api token: the tenant the token is for")
    p.add_argument("--operator", action="store_true", help="api token: an operator token")
    p.add_argument("--name", help="api token: a name for the entry")
    p.add_argument("--scopes", help="api token add: enqueue,read,cancel (default all)")
    p.add_argument("--jobs", help="api token add: the only jobs it may enqueue (comma-separated)")
    p.add_argument("--expires", help="api token add: ISO 8601 UTC time after which it is refused")
    p.add_argument("--audit-log", metavar="FILE",
                   help="append a JSON line for every state-changing request to FILE")
    p.add_argument("--no-check", action="store_true",
                   help="api token: do not check that the tenant is in the directory")
