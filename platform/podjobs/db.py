"""Database shards: one pooled SQLAlchemy engine per shard URL, made lazily.

1. `engine(url)`: PyMySQL for mysql/mariadb URLs (pool_pre_ping, recycled
   connections), SQLite for the embedded default (WAL, a busy timeout, usable
   from worker threads). One engine per URL per process.
2. `reader(url)`: a second, small engine per shard for short reads by
   supervisors (the scheduler's revision reads): PyMySQL connect, read and
   write timeouts of READ_TIMEOUTS seconds, so a shard that does not answer
   costs seconds, not forever. Jobs keep `engine` (no read timeout: a long
   query is theirs to run).
3. `session(url)`: a new ORM session on that shard. A job's `ctx.db` is such a
   session on its tenant's shard; the worker commits it when the job succeeds
   and rolls it back when it fails.
4. PyMySQL (2.x) given no TLS option tries TLS and falls back to plain when the server has
   none ("preferred" mode), building a new `ssl.create_default_context()` for every
   connection: loading the system's CA bundle costs 20-60 ms of CPU each time (a third of
   the CPU of a rollout over 100 new shards: issue 17), for a context that verifies nothing
   (CERT_NONE). Our engines' connections share one such context per process
   (`_SharedTLSConnection`, through SQLAlchemy's do_connect event); connections given TLS
   options in their URL are made as before.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session

_engines: dict[str, Engine] = {}
_lock = threading.Lock()

#: connections kept per shard engine (each worker thread may hold one)
POOL_SIZE = 10


def engine(url: str) -> Engine:
    e = _engines.get(url)
    if e is not None:
        return e
    with _lock:
        e = _engines.get(url)
        if e is None:
            e = _make(url)
            _engines[url] = e
        return e


_readers: dict[str, Engine] = {}

#: (connect, read/write) timeouts in seconds of a `reader` engine
READ_TIMEOUTS = (2.0, 5.0)


def reader(url: str) -> Engine:
    """A small engine on shard `url` with short timeouts (see the module doc)."""
    e = _readers.get(url)
    if e is not None:
        return e
    with _lock:
        e = _readers.get(url)
        if e is None:
            e = _make(url, timeouts=READ_TIMEOUTS)
            _readers[url] = e
        return e


def _make(url: str, timeouts: tuple[float, float] | None = None) -> Engine:
    from podjobs.secrets import resolve

    url = resolve(url)  # a password reference (podjobs.secrets) is resolved on connect
    if url.startswith("sqlite"):
        e = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(e, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return e
    if url.startswith("mysql://"):
        url = "mysql+pymysql://" + url[len("mysql://"):]
    elif url.startswith("mariadb://"):
        url = "mysql+pymysql://" + url[len("mariadb://"):]
    if timeouts is not None:
        connect_s, read_s = timeouts
        e = create_engine(url, pool_size=1, max_overflow=2, pool_pre_ping=True,
                          pool_recycle=3600, connect_args={
                              "connect_timeout": connect_s, "read_timeout": read_s,
                              "write_timeout": read_s})
    else:
        e = create_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_SIZE, pool_pre_ping=True,
                          pool_recycle=3600)
    if e.dialect.driver == "pymysql":
        event.listen(e, "do_connect", _shared_tls_connect)
    return e


def _shared_tls_connect(_dialect: Any, _record: Any, cargs: list[Any],
                        cparams: dict[str, Any]) -> Any:
    """SQLAlchemy's do_connect hook on PyMySQL engines: the connection the dialect would
    make, by `_shared_tls_class()` (see point 4 of the module doc)."""
    return _shared_tls_class()(*cargs, **cparams)


@functools.cache
def _shared_tls_class() -> type:
    """PyMySQL's Connection whose preferred-mode TLS context (the one PyMySQL asks for with an
    empty option dict when given no TLS option) is built once, by PyMySQL's own code, and
    shared; explicit TLS options build their context per connection as before."""
    from pymysql.connections import Connection

    lock = threading.Lock()
    shared: list[Any] = []

    class SharedTLSConnection(Connection):  # type: ignore[misc]
        def _create_ssl_ctx(self, sslp: Any) -> Any:
            if not isinstance(sslp, dict) or sslp:
                return super()._create_ssl_ctx(sslp)
            with lock:
                if not shared:
                    shared.append(super()._create_ssl_ctx({}))
                return shared[0]

    return SharedTLSConnection


def session(url: str) -> Session:
    return Session(engine(url))
