"""The SQL backend's engine: one per database URL, set up for short queue transactions.

- SQLite (the embedded default: one machine): WAL journal, synchronous=NORMAL, a busy
  timeout, and every transaction `BEGIN IMMEDIATE` (it takes the write lock at once, so
  two workers never both read a job and then fight to write it); a read-only look (the
  idle poll) opts out with the execution option `pj_read`.
- MySQL 8 / MariaDB 10.6+: READ COMMITTED (no gap locks between reserving workers),
  reserve with `SELECT ... FOR UPDATE SKIP LOCKED`.
- PostgreSQL (psycopg 3): READ COMMITTED, the same SKIP LOCKED reserve; idle workers wait
  on LISTEN (`listener()`), enqueues NOTIFY.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from podjobs.errors import ConfigurationError

#: seconds SQLite waits for the write lock before "database is locked"
SQLITE_BUSY_S = 30.0
DIALECTS = ("sqlite", "mysql", "mariadb", "postgresql")


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def make_engine(url: str) -> Engine:
    from podjobs.secrets import resolve

    try:
        u = make_url(resolve(url))
    except Exception as exc:
        raise ConfigurationError(
            f"database URL {shown(url)!r} is not a URL SQLAlchemy understands ({exc}); write it "
            f"like sqlite:////var/lib/app/jobs.db or mysql+pymysql://user:pw@host/db") from exc
    name = u.get_backend_name()
    if name not in DIALECTS:
        raise ConfigurationError(
            f"database URL {shown(url)!r}: the SQL backend runs on SQLite, MySQL 8, MariaDB "
            f"10.6+ or PostgreSQL, not {name!r}")
    if name == "sqlite":
        if u.database in (None, "", ":memory:"):
            raise ConfigurationError(
                f"database URL {shown(url)!r}: the SQL backend needs an SQLite file shared by "
                f"the enqueuers and workers (sqlite:////path/jobs.db), not an in-memory database")
        eng = create_engine(u, connect_args={"timeout": SQLITE_BUSY_S, "check_same_thread": False},
                            pool_size=20, max_overflow=20)
        event.listen(eng, "connect", _sqlite_connect)
        event.listen(eng, "begin", _sqlite_begin)
        return eng
    if name in ("mysql", "mariadb") and u.drivername in ("mysql", "mariadb"):
        u = u.set(drivername=f"{name}+pymysql")  # the driver the project ships
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")  # psycopg 3 (LISTEN/NOTIFY wake-ups)
    return create_engine(u, isolation_level="READ COMMITTED", pool_pre_ping=True,
                         pool_size=10, max_overflow=20, pool_recycle=3600)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # pysqlite sends no BEGIN of its own: _sqlite_begin does
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_S * 1000)}")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    if conn.get_execution_options().get("pj_read"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def listener(url: str, channel: str) -> Any:
    """A psycopg connection (autocommit) LISTENing on `channel`."""
    import psycopg

    from podjobs.secrets import resolve

    conninfo = make_url(resolve(url)).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
    conn.execute(f"LISTEN {channel}")
    return conn
