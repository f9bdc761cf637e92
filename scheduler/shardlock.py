"""The lock inside the shard, and the fence, that guard each step of a migration.

1. `ShardLock(conn, fence, holder, still_ours)` on the one connection that
   will run the DDL (MySQL/MariaDB): `acquire()` takes `GET_LOCK(name)`, the
   name being "podjobs_migrations.<database>" (lock names are server-wide). If
   another connection holds it past `steal_after` seconds, that holder is a
   runner that lost the ZooKeeper lock we now hold (it was paused or cut off),
   so its connection is killed (`KILL`) and the lock taken: the stale runner's
   next statement fails on a dead connection.
2. The fence: the sequence number of our ZooKeeper lock node. `acquire()`
   raises it in the shard's fence table (never lowers it) and refuses to go
   on if the shard already saw a larger one: a newer runner took over.
3. `install()` hooks SQLAlchemy's before_cursor_execute on the connection:
   before every statement (every step of the revision, the version stamp
   included) it re-checks, in one query, `IS_USED_LOCK(name) = CONNECTION_ID()`
   and that the shard's fence is still ours, and calls `still_ours()` (our
   ZooKeeper lock and session are intact, the run was not cancelled). Any
   failure raises `LockLost` and nothing more runs.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection

from podjobs.errors import PodjobsError

from .runs import FENCE_TABLE

log = logging.getLogger(__name__)

#: GET_LOCK names are server-wide: the shard's database name is appended, so shards that
#: share a MySQL server do not share the lock
LOCK_PREFIX = "podjobs_migrations"
_CHECK = (f"SELECT IS_USED_LOCK(%s) = CONNECTION_ID(), "
          f"(SELECT fence FROM {FENCE_TABLE} WHERE name = %s)")


class LockLost(PodjobsError):  # type: ignore[misc,unused-ignore]
    """The runner no longer holds the shard lock, the fence or the ZooKeeper lock."""


class StaleFence(LockLost):
    """The shard already saw a larger fence than ours: no retry of this run can go on."""


class UnsupportedShard(PodjobsError):  # type: ignore[misc,unused-ignore]
    """The shard's database has no GET_LOCK (not MySQL or MariaDB)."""


class ShardLock:
    """See the module docstring."""

    def __init__(self, conn: Connection, fence: int, holder: str,
                 still_ours: Callable[[], str | None] = lambda: None, *,
                 name: str | None = None, steal_after: float = 5.0) -> None:
        if conn.dialect.name not in ("mysql", "mariadb"):
            raise UnsupportedShard(
                f"migrations need a MySQL or MariaDB shard (GET_LOCK); this shard is "
                f"{conn.dialect.name}")
        self.conn = conn
        self.fence = fence
        self.holder = holder
        self.still_ours = still_ours
        if name is None:
            db = conn.engine.url.database or conn.execute(text("SELECT DATABASE()")).scalar() or ""
            name = f"{LOCK_PREFIX}.{db}"
            if len(name) > 64:  # GET_LOCK names are at most 64 characters: keep them distinct
                name = f"{LOCK_PREFIX}.{hashlib.sha1(db.encode()).hexdigest()}"
        self.name = name
        self.steal_after = steal_after
        self.steps = 0
        self._installed = False

    def acquire(self) -> None:
        c = self.conn
        deadline = time.monotonic() + self.steal_after
        while True:
            got = c.execute(text("SELECT GET_LOCK(:n, 1)"), {"n": self.name}).scalar()
            if got == 1:
                break
            reason = self.still_ours()
            if reason:
                raise LockLost(f"gave up waiting for the shard lock: {reason}")
            if time.monotonic() >= deadline:
                other = c.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": self.name}).scalar()
                if other is not None:
                    log.warning("shard lock %s held by connection %s past %.1f s while we hold the "
                                "ZooKeeper lock (fence %d): killing that stale runner's connection",
                                self.name, other, self.steal_after, self.fence)
                    try:
                        c.execute(text(f"KILL {int(other)}"))
                    except Exception as exc:  # it went away by itself
                        log.info("KILL %s: %s", other, exc)
                deadline = time.monotonic() + self.steal_after
        c.execute(text(
            f"INSERT INTO {FENCE_TABLE} (name, fence, holder, at) VALUES (:n, :f, :h, :t) "
            f"ON DUPLICATE KEY UPDATE holder = IF(VALUES(fence) > fence, VALUES(holder), holder), "
            f"at = IF(VALUES(fence) > fence, VALUES(at), at), "
            f"fence = GREATEST(fence, VALUES(fence))"),
            {"n": self.name, "f": self.fence, "h": self.holder, "t": time.time()})
        shard_fence = c.execute(text(f"SELECT fence FROM {FENCE_TABLE} WHERE name = :n"),
                                {"n": self.name}).scalar()
        if shard_fence != self.fence:
            self.release()
            raise StaleFence(f"the shard already saw fence {shard_fence}, newer than ours "
                           f"({self.fence}): another runner took over")

    def install(self) -> None:
        event.listen(self.conn, "before_cursor_execute", self._before)
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            event.remove(self.conn, "before_cursor_execute", self._before)
            self._installed = False

    def check(self, cursor: Any = None) -> None:
        """Raise `LockLost` unless we still hold the shard lock, the fence and ZooKeeper's lock."""
        reason = self.still_ours()
        if reason:
            raise LockLost(f"stopped before step {self.steps + 1}: {reason}")
        raw: Any = cursor.connection if cursor is not None else self.conn.connection.dbapi_connection
        cur = raw.cursor()
        try:
            cur.execute(_CHECK, (self.name, self.name))
            row = cur.fetchone()
        finally:
            cur.close()
        holds, fence = (row or (None, None))
        if holds != 1:
            raise LockLost(f"stopped before step {self.steps + 1}: this connection no longer "
                           f"holds the shard lock {self.name!r}")
        if fence != self.fence:
            raise LockLost(f"stopped before step {self.steps + 1}: the shard's fence is {fence}, "
                           f"ours is {self.fence}: another runner took over")

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        self.check(cursor)
        self.steps += 1

    def release(self) -> None:
        self.uninstall()
        try:
            self.conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self.name})
        except Exception as exc:  # connection gone: the server released it
            log.info("RELEASE_LOCK %s: %s", self.name, exc)
