"""Alembic revisions: the ordered list in a migrations directory, and a shard's current one.

1. `Revisions(directory)` reads the Alembic script directory (a folder with a
   `versions/` subfolder of revision files; no env.py is needed, podjobs runs
   each revision itself). History must be linear: several heads or a merge
   is refused with the revisions named. `order` lists revision ids from the
   oldest to the head; `pending(current)` the ones after `current`.
2. `current_revision(conn)` reads the shard's `alembic_version` (None when
   the table is missing or empty: nothing applied yet).
3. `apply(conn, revision)` runs one revision's `upgrade()` through Alembic's
   `Operations` on `conn` and stamps `alembic_version`. A revision module may
   also define `backfill()` returning a `podjobs.Call` (usually an iteration
   job) to run on the shard after its schema step: see `backfill_call`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ProgrammingError

from podjobs.errors import ConfigurationError

VERSION_TABLE = "alembic_version"


def directory_fingerprint(directory: str) -> str:
    """A digest of the revision files in `directory`/versions (names and contents): what a
    worker compares to know whether a deploy changed them since it read them."""
    versions = os.path.join(os.path.abspath(directory), "versions")
    h = hashlib.sha256()
    try:
        names = sorted(n for n in os.listdir(versions) if n.endswith(".py"))
    except OSError:
        return ""
    for name in names:
        h.update(name.encode() + b"\0")
        try:
            with open(os.path.join(versions, name), "rb") as f:
                h.update(f.read())
        except OSError:
            continue
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Revision:
    id: str
    down: str | None
    doc: str
    module: Any


class Revisions:
    """The linear history of one migrations directory (see the module docstring)."""

    def __init__(self, directory: str) -> None:
        directory = os.path.abspath(directory)
        if not os.path.isdir(os.path.join(directory, "versions")):
            raise ConfigurationError(
                f"migrations directory {directory!r} has no versions/ folder; point --migrations "
                f"at an Alembic script directory (the one holding versions/)")
        self.directory = directory
        #: the contents the revisions were read from (see `directory_fingerprint`)
        self.fingerprint = directory_fingerprint(directory)
        self.script = ScriptDirectory(directory)
        heads = self.script.get_heads()
        if len(heads) > 1:
            raise ConfigurationError(
                f"migrations in {directory} have {len(heads)} heads ({', '.join(sorted(heads))}); "
                f"podjobs runs a linear history: merge them with 'alembic merge' or re-parent one")
        revs: list[Revision] = []
        for sc in self.script.walk_revisions():
            downs = sc.down_revision
            if isinstance(downs, tuple | list):
                raise ConfigurationError(
                    f"revision {sc.revision} in {directory} merges {list(downs)}; podjobs runs a "
                    f"linear history")
            revs.append(Revision(sc.revision, downs, (sc.doc or "").strip(), sc.module))
        revs.reverse()
        self.order: list[str] = [r.id for r in revs]
        self.by_id: dict[str, Revision] = {r.id: r for r in revs}

    @property
    def head(self) -> str | None:
        return self.order[-1] if self.order else None

    def get(self, revision: str) -> Revision:
        try:
            return self.by_id[revision]
        except KeyError:
            raise ConfigurationError(
                f"revision {revision!r} is not in {self.directory} (known: "
                f"{', '.join(self.order) or 'none'})") from None

    def index(self, revision: str | None) -> int:
        """Position of `revision` in `order`; -1 for None (nothing applied)."""
        if revision is None:
            return -1
        try:
            return self.order.index(revision)
        except ValueError:
            raise ConfigurationError(
                f"a shard is at revision {revision!r}, which is not in {self.directory}: deploy "
                f"the code that has it before the scheduler runs") from None

    def pending(self, current: str | None) -> list[str]:
        return self.order[self.index(current) + 1:]

    def reached(self, current: str | None, target: str) -> bool:
        """True when a shard at `current` has `target` applied."""
        return self.index(current) >= self.index(target)

    def backfill_call(self, revision: str) -> Any:
        """The Call returned by the revision's `backfill()`, or None when it has none.

        It must be a call of an iteration job: its progress is how the rollout knows the
        data step is done (`ConfigurationError` otherwise)."""
        from podjobs.iteration import IterationJob
        from podjobs.jobs import Call

        fn = getattr(self.get(revision).module, "backfill", None)
        if not callable(fn):
            return None
        call = fn()
        cls = getattr(getattr(call, "job", None), "job_class", None)
        if not isinstance(call, Call) or cls is None or not issubclass(cls, IterationJob):
            raise ConfigurationError(
                f"revision {revision}: backfill() returned {call!r}; return the call of an "
                f"iteration job (MyBackfill.call(...)), whose progress the rollout follows")
        return call


#: MySQL/MariaDB's "table doesn't exist"
_NO_SUCH_TABLE = 1146


def current_revision(conn: Connection) -> str | None:
    """The shard's alembic revision; None when nothing was applied (no version table, or an
    empty one). On MySQL/MariaDB one query (was: two has_table reflections and the
    SELECT: the leader reads a shard after each of its runs changes, a job before its DDL)."""
    if conn.dialect.name not in ("mysql", "mariadb"):
        if not sa_inspect(conn).has_table(VERSION_TABLE):
            return None
        return MigrationContext.configure(conn).get_current_revision()
    try:
        heads = list(conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalars())
    except ProgrammingError as exc:
        if getattr(exc.orig, "args", (None,))[0] == _NO_SUCH_TABLE:
            return None
        raise
    if len(heads) > 1:
        raise ConfigurationError(
            f"the shard's {VERSION_TABLE} holds {len(heads)} revisions ({', '.join(heads)}); "
            f"podjobs runs a linear history")
    return str(heads[0]) if heads else None


#: Alembic's `op` is one process-wide proxy (the module global `alembic.op._proxy`, which
#: each `op.x()` reads when called): `Operations.context()` in two threads at once (pod
#: workers of several pods in one process) would swap it under each other. `apply` installs
#: `_ThreadOps` there instead while any revision runs: it hands each call to the calling
#: thread's own Operations, so revisions of different shards run at the same time (before
#: issue 17 they ran one at a time behind a lock: 100 shards in waves of 10 at load 5-8, it
#: was held 5.5 s of a 14.8 s rollout, each wave's DDL one after another). An alembic whose
#: `op` functions no longer read `_proxy` gets the lock again (`_THREAD_OPS` False).
_op_lock = threading.Lock()


class _ThreadOps:
    """alembic.op's proxy while revisions run: the calling thread's Operations."""

    def __init__(self) -> None:
        # underscored: `op.<name>` never means one of these (alembic proxies public names)
        self._local = threading.local()
        #: apply() calls under way (the proxy is put back when the last one ends)
        self._users = 0
        #: what alembic.op._proxy was before the first of them
        self._saved: Any = None

    def __getattr__(self, name: str) -> Any:
        ops = getattr(self._local, "ops", None)
        if ops is None:
            raise RuntimeError(f"alembic op.{name}() called in a thread that is not applying a "
                               f"revision (podjobs.scheduler.revisions.apply)")
        return getattr(ops, name)


def _reads_proxy() -> bool:
    import alembic.op

    fn = getattr(alembic.op, "create_table", None)
    return "_proxy" in getattr(getattr(fn, "__code__", None), "co_names", ())


_THREAD_OPS = _reads_proxy()
_thread_ops = _ThreadOps()


@contextmanager
def _operations(ctx: MigrationContext) -> Iterator[Operations]:
    """`Operations.context(ctx)` for the calling thread alone (see `_ThreadOps`)."""
    if not _THREAD_OPS:
        with _op_lock, Operations.context(ctx) as op:
            yield op
        return
    import alembic.op

    op = Operations(ctx)
    t = _thread_ops
    with _op_lock:
        if t._users == 0:
            t._saved = vars(alembic.op).get("_proxy")
        vars(alembic.op)["_proxy"] = t
        t._users += 1
    t._local.ops = op
    try:
        yield op
    finally:
        t._local.ops = None
        with _op_lock:
            t._users -= 1
            if t._users == 0:
                vars(alembic.op)["_proxy"] = t._saved


def apply(conn: Connection, revisions: Revisions, revision: str,
          statements: AbstractContextManager[Any] | None = None) -> None:
    """Run `revision`'s upgrade() on `conn` and record it in alembic_version; `statements`,
    when given, is entered around upgrade() alone (applied.StatementLog: recording and
    skipping the revision's own statements, not the stamp). Revisions on different
    connections may run at the same time in one process (see `_ThreadOps`)."""
    rev = revisions.get(revision)
    ctx = MigrationContext.configure(conn)
    with _operations(ctx), statements or nullcontext():
        rev.module.upgrade()
    if conn.dialect.name in ("mysql", "mariadb"):
        _advance(conn, rev)
    else:
        stamp(conn, revisions, revision)


def _advance(conn: Connection, rev: Revision) -> None:
    """Record `rev` as applied on a shard at `rev.down` (MySQL/MariaDB): what alembic's stamp
    writes for one step of a linear history, in one statement (two on a shard's first
    revision: the version table made as alembic makes it). Alembic's stamp reflected the
    table first: four statements, each behind the shard lock's check (issue 17)."""
    if rev.down is None:
        conn.execute(text(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
            f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"))
        done = conn.execute(text(
            f"INSERT INTO {VERSION_TABLE} (version_num) SELECT :rev FROM DUAL "
            f"WHERE NOT EXISTS (SELECT 1 FROM {VERSION_TABLE})"), {"rev": rev.id}).rowcount
    else:
        done = conn.execute(text(
            f"UPDATE {VERSION_TABLE} SET version_num = :rev WHERE version_num = :down"),
            {"rev": rev.id, "down": rev.down}).rowcount
    if done != 1:
        raise ConfigurationError(
            f"cannot record {rev.id} as applied: the shard's {VERSION_TABLE} is no longer at "
            f"{rev.down or 'base'} (changed while the revision ran?)")


def resumable(revisions: Revisions, revision: str) -> bool:
    """The revision declares `resumable = True`: its statements are the same, in the same
    order, on every run, so a retry may skip those an earlier run applied."""
    return getattr(revisions.get(revision).module, "resumable", False) is True


def stamp(conn: Connection, revisions: Revisions, revision: str) -> None:
    """Set the shard's alembic_version to `revision` without running anything."""
    ctx = MigrationContext.configure(conn)
    ctx.stamp(revisions.script, revision)
