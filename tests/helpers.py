"""Helpers shared by the core tests: bounded waits, in-process and subprocess workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from podjobs.backend import RedisBackend
from podjobs.worker import Worker, WorkerConfig

REPO = Path(__file__).resolve().parent.parent


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `cond` (a cheap Redis read) until truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(0.05, delay * 1.5)


def fast_config(**kw: Any) -> WorkerConfig:
    base: dict[str, Any] = dict(
        queues=["default"],
        concurrency=4,
        heartbeat_ttl=1.0,
        poll_interval=0.05,
        idle_wait=0.2,
        shutdown_timeout=2.0,
    )
    base.update(kw)
    return WorkerConfig(**base)


@contextmanager
def worker(url: str, **kw: Any) -> Iterator[Worker]:
    w = Worker(RedisBackend(url), fast_config(**kw))
    w.start()
    try:
        yield w
    finally:
        w.stop()


def spawn_worker(
    url: str,
    *extra: str,
    app: str = "tests.apps.core_app",
    queues: str = "default",
    concurrency: int = 4,
    ttl: float = 1.0,
    log: Path | None = None,
    record_url: str | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """A worker process (`new_session`: in a process group of its own, for os.killpg;
    `record_url`: where the test jobs record what they did, when not on the queue's Redis)."""
    env = dict(os.environ, PODJOBS_RECORD_URL=record_url or url, PYTHONPATH=str(REPO))
    cmd = [
        sys.executable,
        "-m",
        "podjobs.cli",
        "worker",
        "--redis",
        url,
        "--app",
        app,
        "--queues",
        queues,
        "--concurrency",
        str(concurrency),
        "--heartbeat-ttl",
        str(ttl),
        "--poll-interval",
        "0.05",
        "--log-level",
        "info",
        *extra,
    ]
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=new_session)


def stop_proc(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    if p.poll() is None:
        p.send_signal(sig)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait(5)


@contextmanager
def api_server(args: list[str], log: Path, probe: str = "/healthz",
               env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`podjobs api --host 127.0.0.1 --port P ARGS...` in a process of its own, logging to
    `log`, until `probe` answers 200: (the process, its URL); stopped by pid at the end."""
    import httpx

    from podjobs.infra.ports import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "podjobs.cli", "api", "--host", "127.0.0.1", "--port", str(port),
           *args]
    out = open(log, "ab")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"podjobs api exited: {log.read_text()[-3000:]}")
        try:
            return httpx.get(url + probe, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=30, what="the API server")
        yield proc, url
    finally:
        stop_proc(proc)
        out.close()


def reserve_replies(w: Any) -> list[Any]:
    """What each of the worker's reservations got from Redis from now on ([] for nothing)."""
    replies: list[Any] = []
    backend = w.fetcher.backend
    for name in ("reserve", "reserve_after_wait"):  # plain, and an idle worker's wait + reserve
        method = getattr(backend, name)

        def recorded(*a: Any, _method: Any = method, **kw: Any) -> Any:
            got = _method(*a, **kw)
            replies.append(list(got) if got is not None else None)
            return got

        setattr(backend, name, recorded)
    return replies
