"""Exactly-once effects: `ctx.once(key)` records `key` in the ledger table `podjobs_once` on
the job's shard, through `ctx.db`, so in the same transaction as the job's own writes.

- True: the key was not there; it is now written (uncommitted). The job does its effect
  with `ctx.db`; the worker commits both when the job succeeds, rolls both back when it
  fails (a rolled-back run leaves no key, and the retry does the effect).
- False: a committed run already did it (a retry after a later failure, a duplicate
  delivery, a second job with the same key): skip the effect. A run still in flight with
  the same key makes the insert wait for its transaction (the row lock) and then answer.

Each key records the job's tenant: a tenant move copies the tenant's keys to the new pod's
shard (`copy_keys`, pods/moves.py), so a job run again there does not repeat the effect.

Insert-or-ignore by dialect (MySQL/MariaDB `INSERT IGNORE`, SQLite `INSERT OR IGNORE`,
PostgreSQL `ON CONFLICT DO NOTHING`), so a duplicate never aborts the job's transaction.
Rows expire: `ttl` (default DEFAULT_TTL_S) sets `expires_ms`; `prune(url)` deletes expired
rows in bounded batches (the job `podjobs.prune_once_ledger` runs it on a job's shard:
schedule it with `podjobs.periodic`). Only effects written through `ctx.db` are covered: an
HTTP call to a payment provider must carry the key as its own idempotency key.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from podjobs.db import engine

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from podjobs.context import Context

TABLE = "podjobs_once"
#: how long a key is kept by default (a week: far past any retry or redelivery)
DEFAULT_TTL_S = 7 * 86_400
#: rows one prune statement deletes
PRUNE_BATCH = 5000

_ensured: set[str] = set()
_lock = threading.Lock()


def _create(conn: Connection) -> None:
    conn.execute(text(
        f"CREATE TABLE IF NOT EXISTS {TABLE} ("
        " okey VARCHAR(255) NOT NULL PRIMARY KEY,"
        " job_id CHAR(26) NOT NULL,"
        " created_ms BIGINT NOT NULL,"
        " expires_ms BIGINT NOT NULL,"
        " tenant VARCHAR(255) NULL)"))
    _add_tenant(conn)
    if conn.dialect.name != "sqlite":
        # (MySQL has no CREATE INDEX IF NOT EXISTS everywhere: ask first)
        got = conn.execute(text(f"SHOW INDEX FROM {TABLE} WHERE Key_name = 'ix_once_expires'")
                           ).first() if conn.dialect.name in ("mysql", "mariadb") else True
        if not got:
            conn.execute(text(f"CREATE INDEX ix_once_expires ON {TABLE} (expires_ms)"))


def _add_tenant(conn: Connection) -> None:
    """The `tenant` column (a tenant move copies the tenant's keys) on a table made before it."""
    d = conn.dialect.name
    if d == "sqlite":
        cols = {r[1] for r in conn.execute(text(f"PRAGMA table_info({TABLE})"))}
    elif d in ("mysql", "mariadb"):
        cols = {r[0] for r in conn.execute(text(f"SHOW COLUMNS FROM {TABLE}"))}
    else:
        cols = {r[0] for r in conn.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_name = :t"),
            {"t": TABLE})}
    if "tenant" not in cols:
        conn.execute(text(f"ALTER TABLE {TABLE} ADD COLUMN tenant VARCHAR(255) NULL"))


def ensure_table(url_or_engine: str | Engine, cached: bool = True) -> None:
    """Create the ledger table on a shard if it is missing (its own connection and commit);
    `cached`: not again for an engine this process already made it on."""
    e = engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    key = str(e.url)
    if cached and key in _ensured:
        return
    with _lock, e.begin() as conn:
        _create(conn)
        _ensured.add(key)


def _insert_sql(dialect: str) -> str:
    cols = (f"{TABLE} (okey, job_id, created_ms, expires_ms, tenant) "
            f"VALUES (:k, :j, :c, :e, :t)")
    if dialect == "sqlite":
        return f"INSERT OR IGNORE INTO {cols}"
    if dialect == "postgresql":
        return f"INSERT INTO {cols} ON CONFLICT DO NOTHING"
    return f"INSERT IGNORE INTO {cols}"


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > 255:
        raise ValueError(f"ctx.once key {key!r}: use a non-empty string of at most 255 "
                         f"characters naming the effect, e.g. f'charge:{{order_id}}'")
    return key


def once(ctx: Context, key: str, ttl: float = DEFAULT_TTL_S) -> bool:
    """See the module docstring."""
    _check_key(key)
    session: Any = ctx.db
    bind = session.get_bind().engine
    ensure_table(bind)
    now = time.time_ns() // 1_000_000
    params = {"k": key, "j": ctx.job_id, "c": now, "e": now + int(ttl * 1000), "t": ctx.tenant}
    sql = text(_insert_sql(bind.dialect.name))
    try:
        res = session.execute(sql, params)
    except ProgrammingError as exc:
        if TABLE not in str(exc):
            raise
        _ensured.discard(str(bind.url))  # dropped since this process made it
        ensure_table(bind)
        res = session.execute(sql, params)
    return bool(res.rowcount == 1)


def prune(url: str, now_ms: int | None = None, batch: int = PRUNE_BATCH) -> int:
    """Delete expired ledger rows on a shard (in batches of `batch`); returns how many."""
    e = engine(url)
    ensure_table(e, cached=False)
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    total = 0
    while True:
        with e.begin() as conn:
            if conn.dialect.name == "sqlite":
                sql = (f"DELETE FROM {TABLE} WHERE okey IN (SELECT okey FROM {TABLE} "
                       f"WHERE expires_ms <= :now LIMIT {int(batch)})")
            else:
                sql = f"DELETE FROM {TABLE} WHERE expires_ms <= :now LIMIT {int(batch)}"
            n = int(conn.execute(text(sql), {"now": now}).rowcount)
        total += n
        if n < batch:
            return total


def copy_keys(src_url: str, dst_url: str, tenant: str, batch: int = 1000) -> int:
    """Copy a tenant's unexpired keys from one shard's ledger to another's (a tenant move, after
    the tenant's fence went up on the source): a job of the tenant run again on the new pod
    (redelivered after a worker died between its commit and its ack) finds its key there and
    does not repeat the effect. Keys already there are kept; returns how many were read."""
    src, dst = engine(src_url), engine(dst_url)
    now = time.time_ns() // 1_000_000
    sql = text(_insert_sql(dst.dialect.name))
    after, total, upgraded = "", 0, False
    while True:
        try:
            with src.connect() as conn:
                rows = conn.execute(text(
                    f"SELECT okey, job_id, created_ms, expires_ms FROM {TABLE} WHERE tenant = :t "
                    f"AND okey > :a AND expires_ms > :now ORDER BY okey LIMIT {int(batch)}"),
                    {"t": tenant, "a": after, "now": now}).all()
                conn.rollback()
        except DBAPIError as exc:  # (PyMySQL: an unknown column is an OperationalError)
            msg = str(exc).lower()
            if TABLE in msg and "tenant" in msg and "unknown column" in msg and not upgraded:
                ensure_table(src, cached=False)    # a table made before the column: add it
                upgraded = True
                continue
            if TABLE in msg and ("doesn't exist" in msg or "no such table" in msg
                                 or "does not exist" in msg):
                return total                       # no ctx.once on the source: nothing to copy
            raise
        if not rows:
            return total
        if not total:
            ensure_table(dst, cached=False)
        with dst.begin() as conn:
            conn.execute(sql, [{"k": r[0], "j": r[1], "c": r[2], "e": r[3], "t": tenant}
                               for r in rows])
        total += len(rows)
        after = str(rows[-1][0])


def _prune_job(ctx: Context) -> int:
    """Delete this pod's expired ledger rows (on the job's shard)."""
    if not ctx.shard_url:
        raise RuntimeError("podjobs.prune_once_ledger needs a shard: run it on a pod worker "
                           "(--pod NAME) or a worker with a shard URL")
    return prune(ctx.shard_url)


def _register() -> Any:
    from podjobs.jobs import job

    return job(_prune_job, name="podjobs.prune_once_ledger", retries=3)


#: the prune as a job; schedule it from your app module, once per pod:
#: `podjobs.periodic("17 * * * *", per_pod=True)(prune_once_ledger)`
prune_once_ledger = _register()
