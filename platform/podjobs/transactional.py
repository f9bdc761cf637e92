"""Transactional enqueue: jobs written into the caller's database transaction (an outbox on
the tenant's shard), moved to the pod's Redis only once that transaction committed.

1. `enqueue(session, call, tenant=...)` (what `job.enqueue(..., db=session)` and enqueues
   inside `with podjobs.outbox(session):` do) inserts the job's payload into the table
   `podjobs_outbox` through `session`, without committing: a rollback drops it with the
   rest of the transaction, a commit makes it visible to the relay. The table is created
   (`ensure_table`) on another connection the first time an engine is used (DDL inside the
   caller's transaction would commit it on MySQL/MariaDB).
2. `Relay(shard_url, backend)`: `once()` reads the oldest committed rows (by row id: the
   order they were written, so one tenant's jobs from one transaction, or from transactions
   that commit one after another, leave in commit order), pushes them to the pod's Redis in
   batches (`RedisBackend.outbox_push`: one script a queue run, each job written unless its
   sent marker exists), then deletes the rows. A relay killed between the push and the
   delete pushes the rows again, and Redis writes nothing: each job is enqueued once.
   `run(stop)` repeats it, waiting `idle_wait` s when nothing was there. Two transactions of
   one tenant open at once can commit in the other order than their row ids: with
   `outbox(session, ordered=True)` each enqueue first takes the tenant's row lock in
   `podjobs_outbox_lock` (held to the transaction's end), so the second waits for the first
   and the relay's id order is the commit order.
3. A tenant move (pods/moves.py) takes the tenant's unsent rows off the source shard:
   `tenant_rows` reads them (row order), the move claims each job's sent marker on the
   source pod's Redis (`RedisBackend.outbox_claim`), holds the ones it owns on the
   destination pod with the tenant's other jobs, then `delete_rows`.
4. `outbox(session)` (podjobs.client's, re-exported as podjobs.outbox): a block whose
   enqueues go to the outbox. Not in the outbox: unique jobs and tracked jobs (refused with a message).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from podjobs.client import OUTBOX, OUTBOX_ORDERED, JobHandle, check_arguments
from podjobs.db import engine
from podjobs.errors import ConfigurationError
from podjobs.payload import DEFAULT_MAX_PAYLOAD_BYTES, encode

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import Session

    from podjobs.backend import RedisBackend
    from podjobs.jobs import Call

log = logging.getLogger("podjobs.outbox")

TABLE = "podjobs_outbox"
#: one row per tenant whose outbox enqueues are ordered: its row lock orders the transactions
LOCKS = "podjobs_outbox_lock"
#: rows a relay moves per round trip
BATCH = 1000

_ensured: set[str] = set()
_ensured_lock = threading.Lock()


def _create(conn: Connection) -> None:
    if conn.dialect.name == "sqlite":
        key = "id INTEGER PRIMARY KEY AUTOINCREMENT"
        body = "payload TEXT NOT NULL"
    else:
        key = "id BIGINT AUTO_INCREMENT PRIMARY KEY"
        body = "payload LONGTEXT NOT NULL"
    conn.execute(text(
        f"CREATE TABLE IF NOT EXISTS {TABLE} ("
        f" {key},"
        " job_id CHAR(26) NOT NULL UNIQUE,"
        " tenant VARCHAR(255) NULL,"
        " queue VARCHAR(255) NOT NULL,"
        " due_ms BIGINT NOT NULL,"
        " created_ms BIGINT NOT NULL,"
        f" {body})"))
    conn.execute(text(f"CREATE TABLE IF NOT EXISTS {LOCKS} ("
                      " tenant VARCHAR(255) NOT NULL PRIMARY KEY, n BIGINT NOT NULL)"))


def ensure_table(url_or_engine: str | Engine) -> None:
    """Create the outbox table on a shard if it is missing (its own connection and commit)."""
    e = engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    key = str(e.url)
    if key in _ensured:
        return
    with _ensured_lock, e.begin() as conn:
        _create(conn)
        _ensured.add(key)


def _missing_table(exc: Exception) -> bool:
    msg = str(exc).lower()
    return TABLE in msg and ("doesn't exist" in msg or "no such table" in msg
                             or "does not exist" in msg)


def _due_ms(now_ms: int, delay: float | timedelta | None, at: datetime | float | None) -> int:
    if delay is not None:
        secs = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        return now_ms + max(0, int(secs * 1000))
    if at is not None:
        if isinstance(at, datetime):
            if at.tzinfo is None:
                raise ConfigurationError(
                    f"enqueue_at got a naive datetime {at!r}; pass an aware one "
                    f"(datetime.now(timezone.utc) + ...) so the time is unambiguous")
            return int(at.timestamp() * 1000)
        return int(float(at) * 1000)
    return 0


def enqueue(session: Session, call: Call, *, tenant: str | None = None, pod: str | None = None,
            delay: float | timedelta | None = None, at: datetime | float | None = None,
            max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> JobHandle:
    """Write `call` into the outbox through `session` (in its transaction; not committed)."""
    opts = call.job.options
    if opts.unique_for:
        raise ConfigurationError(
            f"job {call.job.name!r} is unique; a unique job cannot go through the outbox "
            f"(db=/podjobs.outbox): enqueue it after the commit instead")
    if call.track is not None:
        raise ConfigurationError(
            f"job {call.job.name!r}: a tracked enqueue cannot go through the outbox "
            f"(db=/podjobs.outbox); drop tracking or enqueue it after the commit")
    check_arguments(call)
    now_ms = time.time_ns() // 1_000_000
    p = call.payload(now_ms, tenant, pod)
    body = encode(p, max_payload_bytes)
    queue = call.queue or opts.queue
    bind = session.get_bind().engine
    ensure_table(bind)
    insert = text(f"INSERT INTO {TABLE} (job_id, tenant, queue, due_ms, created_ms, payload) "
                  "VALUES (:job_id, :tenant, :queue, :due, :now, :payload)")
    row = {"job_id": p["id"], "tenant": tenant, "queue": queue,
           "due": _due_ms(now_ms, delay, at), "now": now_ms, "payload": body}
    ordered = tenant is not None and bool(session.info.get(OUTBOX_ORDERED))
    for again in (False, True):
        try:
            if ordered:
                assert tenant is not None
                _lock_tenant(session, bind.dialect.name, tenant)
            session.execute(insert, row)
            break
        except ProgrammingError as exc:
            if again or not _missing_table(exc):
                raise
            # dropped since this process made it: again (MySQL/MariaDB keep the transaction)
            _ensured.discard(str(bind.url))
            ensure_table(bind)
    return JobHandle(p["id"], call.job.name, queue, pod, tenant)


def _lock_tenant(session: Session, dialect: str, tenant: str) -> None:
    """Take the tenant's outbox row lock in the session's transaction (held to its end): a
    second transaction of the tenant waits here, so its rows get larger ids and it commits
    after the first; the relay's id order is then the commit order (`outbox(s, ordered=True)`).
    SQLite serializes writing transactions already."""
    if dialect == "sqlite":
        return
    if dialect == "postgresql":
        sql = (f"INSERT INTO {LOCKS} (tenant, n) VALUES (:t, 1) "
               f"ON CONFLICT (tenant) DO UPDATE SET n = {LOCKS}.n + 1")
    else:
        sql = f"INSERT INTO {LOCKS} (tenant, n) VALUES (:t, 1) ON DUPLICATE KEY UPDATE n = n + 1"
    session.execute(text(sql), {"t": tenant})


def current() -> Session | None:
    """The session of the innermost `with podjobs.outbox(session):` block, if any."""
    got: Session | None = OUTBOX.get()
    return got


@dataclass(frozen=True)
class Row:
    id: int
    job_id: str
    queue: str
    due_ms: int
    payload: str


def tenant_rows(url: str, tenant: str, limit: int = BATCH) -> list[Row]:
    """The oldest `limit` unsent rows of one tenant on a shard (row order); [] when the shard
    has no outbox table."""
    e = engine(url)
    try:
        with e.connect() as conn:
            rows = conn.execute(text(
                f"SELECT id, job_id, queue, due_ms, payload FROM {TABLE} WHERE tenant = :t "
                f"ORDER BY id LIMIT :n"), {"t": tenant, "n": limit}).all()
            conn.rollback()
    except ProgrammingError as exc:
        if not _missing_table(exc):
            raise
        return []
    return [Row(int(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4])) for r in rows]


def delete_rows(url: str, ids: list[int]) -> int:
    """Delete outbox rows by row id (their jobs were sent); returns how many were there."""
    if not ids:
        return 0
    with engine(url).begin() as conn:
        return int(conn.execute(text(
            f"DELETE FROM {TABLE} WHERE id IN ({','.join(str(int(i)) for i in ids)})")).rowcount)


class Relay:
    """Moves one shard's committed outbox rows to one pod's Redis (see the module docstring)."""

    def __init__(self, shard_url: str, backend: RedisBackend, *, batch: int = BATCH,
                 idle_wait: float = 0.01) -> None:
        self.shard_url = shard_url
        self.backend = backend
        self.batch = batch
        self.idle_wait = idle_wait
        #: called after a push, before the rows are deleted (fault tests kill the relay there)
        self.after_push: Any = None
        self.moved = 0

    def _read(self, conn: Connection) -> list[Row]:
        rows = conn.execute(text(
            f"SELECT id, job_id, queue, due_ms, payload FROM {TABLE} ORDER BY id LIMIT :n"),
            {"n": self.batch}).all()
        return [Row(int(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4])) for r in rows]

    def once(self) -> int:
        """Move up to `batch` rows; returns how many rows were moved (pushed or found pushed)."""
        e = engine(self.shard_url)
        ensure_table(e)
        try:
            with e.connect() as conn:
                rows = self._read(conn)
                conn.rollback()
        except ProgrammingError as exc:
            if not _missing_table(exc):
                raise
            _ensured.discard(str(e.url))  # dropped since: made again, and nothing to move
            ensure_table(e)
            return 0
        if not rows:
            return 0
        # runs of one queue, in row order: one script each
        start = 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows[i].queue != rows[start].queue:
                run = rows[start:i]
                self.backend.outbox_push(run[0].queue, [(r.job_id, r.due_ms, r.payload) for r in run])
                start = i
        if self.after_push is not None:
            self.after_push(rows)
        delete_rows(self.shard_url, [r.id for r in rows])
        self.moved += len(rows)
        return len(rows)

    def run(self, stop: threading.Event) -> None:
        """Move rows until `stop` is set; errors are logged and retried after a pause."""
        while not stop.is_set():
            try:
                n = self.once()
            except Exception:
                log.warning("outbox relay of %s failed; retrying", self.shard_url, exc_info=True)
                stop.wait(1.0)
                continue
            if n < self.batch:
                stop.wait(self.idle_wait)
