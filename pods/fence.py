"""The tenant fence on a shard: a worker that missed a move cannot commit there afterwards.

A worker of the old pod that was paused (SIGSTOP, a long GC) through a move is
reaped by the mover, its jobs carried to the new pod; when it wakes it still
believes it runs them. The fence stops its commits:

1. Table `podjobs_tenant_fence` (tenant, version, move id, time) on each shard;
   `ensure_table(url)` creates it (a pod worker at start, the mover).
2. A job of a tenant is admitted on a pod under the directory version of the
   tenant's entry its worker saw (`tenantcheck`: `Admit(version)`). Every commit
   of its `ctx.db` (the final one and any the job makes itself) first reads the
   tenant's fence row in the same transaction (`LOCK IN SHARE MODE` on
   MySQL/MariaDB) and refuses to commit (`TenantFenced`) if the fence is
   larger than that version.
3. The mover raises the fence on the source shard (`raise_fence`) to the
   version at which the move began, before it reaps any worker of the source
   pod and before it leaves the quiesce step: every job of the tenant admitted
   there before the move has a smaller version. The raise is an upsert that
   waits for the row lock a committing job holds, so a job either committed
   before the fence (and before the data copy) or is refused. The fence only
   grows (GREATEST): after a rollback, or a later move back, the tenant's entry
   has a larger version than any fence, so its jobs commit again.

Only `ctx.db` commits are fenced; a job that opens its own connections is not.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from podjobs.db import engine
from podjobs.errors import PodjobsError

log = logging.getLogger(__name__)

TABLE = "podjobs_tenant_fence"


class TenantFenced(PodjobsError):
    """A job's commit on a shard was refused: its tenant moved off this pod meanwhile."""


def _create(conn: Any) -> None:
    conn.execute(text(
        f"CREATE TABLE IF NOT EXISTS {TABLE} ("
        " tenant VARCHAR(255) PRIMARY KEY,"
        " version BIGINT NOT NULL,"
        " move_id VARCHAR(64) NOT NULL,"
        " at DOUBLE NOT NULL)"))


def ensure_table(url: str) -> None:
    """Create the fence table on the shard if it is missing."""
    with engine(url).begin() as conn:
        _create(conn)


def raise_fence(url: str, tenant: str, version: int, move_id: str) -> int:
    """Fence the tenant's jobs admitted below `version` off this shard; returns the fence."""
    with engine(url).begin() as conn:
        _create(conn)
        params = {"t": tenant, "v": version, "m": move_id, "at": time.time()}
        if conn.dialect.name in ("mysql", "mariadb"):
            conn.execute(text(
                f"INSERT INTO {TABLE} (tenant, version, move_id, at) VALUES (:t, :v, :m, :at) "
                f"ON DUPLICATE KEY UPDATE move_id = IF(VALUES(version) > version, VALUES(move_id), move_id), "
                f"at = IF(VALUES(version) > version, VALUES(at), at), "
                f"version = GREATEST(version, VALUES(version))"), params)
        else:
            conn.execute(text(
                f"INSERT INTO {TABLE} (tenant, version, move_id, at) VALUES (:t, :v, :m, :at) "
                f"ON CONFLICT(tenant) DO UPDATE SET "
                f"move_id = CASE WHEN excluded.version > version THEN excluded.move_id ELSE move_id END, "
                f"at = CASE WHEN excluded.version > version THEN excluded.at ELSE at END, "
                f"version = MAX(version, excluded.version)"), params)
        fence = conn.execute(text(f"SELECT version FROM {TABLE} WHERE tenant = :t"), {"t": tenant}).scalar()
    return int(fence or 0)


def check(session: Session, url: str, tenant: str, version: int) -> None:
    """In the session's transaction: raise `TenantFenced` if the tenant is fenced above `version`."""
    sql = f"SELECT version FROM {TABLE} WHERE tenant = :t"
    if session.get_bind().dialect.name in ("mysql", "mariadb"):
        sql += " LOCK IN SHARE MODE"  # the mover's raise waits until this transaction ends
    try:
        fence = session.execute(text(sql), {"t": tenant}).scalar()
    except DBAPIError as exc:
        try:
            ensure_table(url)
        except DBAPIError:
            log.warning("cannot create %s on the shard of tenant %s", TABLE, tenant, exc_info=True)
        raise TenantFenced(
            f"cannot read the move fence of tenant {tenant!r} on its shard ({exc.orig!r}); the "
            f"commit was refused and the job will be retried (the fence table {TABLE} is created "
            f"when a pod worker starts)") from exc
    if fence is not None and int(fence) > version:
        raise TenantFenced(
            f"tenant {tenant!r} moved off this pod (fence {int(fence)} on its shard; this job was "
            f"admitted under directory version {version}): the commit was refused. The job was "
            f"carried to the tenant's pod and runs there; nothing to do")


def guard(session: Session, url: str, tenant: str, version: int) -> None:
    """Check the fence before every commit of `session` (the job's `ctx.db`)."""
    def before_commit(s: Session) -> None:
        check(s, url, tenant, version)

    event.listen(session, "before_commit", before_commit)
