"""Migration run records: one per (shard, revision), in ZooKeeper and on the shard.

1. The record (`Run`) and its states (`RunState`, the machine and its one `transition()`)
   are in runstate.py (pure); this module stores them.
2. `RunStore(zk)` keeps the record the scheduler decides on, at
   migrations/runs/{pod}/{revision} (JSON, updated with version checks); and
   the halts at migrations/halts/{revision}: a failed revision is halted on
   every shard that has not applied it yet.
3. `ShardLog` writes each run as a row of `podjobs_migrations` on the shard
   itself (revision, state, started, finished, worker, job id, fence, error, and
   `applied`: the statements it applied, written after each one, see applied.py):
   the shard's own history, kept with its data. `last_run(conn, revision)` reads
   the newest row of a revision (what a retry resumes after).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from podjobs.pods.zk import ZK, Mirror, NodeExistsError, NoNodeError, RolledBackError

from . import paths
from .runstate import Run, RunState

SHARD_TABLE = "podjobs_migrations"
FENCE_TABLE = "podjobs_migration_fence"


def commit_error(results: list[Any]) -> Exception | None:
    """The operation's own error in a failed transaction's results (not RolledBackError)."""
    for r in results:
        if isinstance(r, Exception) and not isinstance(r, RolledBackError):
            return r
    return None


class RunStore:
    """Run records and halts in ZooKeeper (see the module docstring)."""

    def __init__(self, zk: ZK) -> None:
        self.zk = zk
        #: runs parents this store made sure of (`create` ensures each once)
        self._parents: set[str] = set()

    def get(self, pod: str, revision: str) -> Run | None:
        got = self.zk.get_json(paths.run(self.zk, pod, revision))
        return Run.from_json(*got) if got else None

    def for_pod(self, pod: str) -> dict[str, Run]:
        base = paths.runs(self.zk, pod)
        names = self.zk.children(base)
        got = self.zk.get_many_json(f"{base}/{n}" for n in names)
        out = {}
        for n in names:
            v = got.get(f"{base}/{n}")
            if isinstance(v, tuple):
                out[n] = Run.from_json(*v)
        return out

    def all(self, pods: list[str], mirror: Mirror | None = None) -> dict[str, dict[str, Run]]:
        """Every pod's run records in two pipelined rounds (children, then data), not two
        round trips per pod; from `mirror` (a `ZK.mirror` of migrations/runs) while it is
        fresh."""
        bases = {p: paths.runs(self.zk, p) for p in pods}
        if mirror is not None and mirror.fresh:
            cached: dict[str, dict[str, Run]] = {}
            for p, b in bases.items():
                runs = cached[p] = {}
                for n in mirror.children(b) or []:
                    try:
                        v = mirror.get_json(f"{b}/{n}")
                    except ValueError:
                        continue  # malformed: left out, as the direct read does
                    if v is not None:
                        runs[n] = Run.from_json(*v)
            if mirror.fresh:  # still: nothing was read from a half-synced mirror
                return cached
        kids = self.zk.children_many(bases.values())
        got = self.zk.get_many_json(f"{b}/{n}" for b in bases.values() for n in kids[b])
        out: dict[str, dict[str, Run]] = {}
        for p, b in bases.items():
            runs = out[p] = {}
            for n in kids[b]:
                v = got.get(f"{b}/{n}")
                if isinstance(v, tuple):
                    runs[n] = Run.from_json(*v)
        return out

    def create(self, run: Run, txn: Any = None) -> bool:
        """Create the record (in `txn` when given, committed here); False if it exists."""
        if txn is not None:
            return self.create_many([run], txn)
        self._ensure_parent(paths.runs(self.zk, run.pod))
        try:
            self.zk.create_json(paths.run(self.zk, run.pod, run.revision), run.to_json())
        except NodeExistsError:
            return False
        return True

    def create_many(self, runs: list[Run], txn: Any) -> bool:
        """Create the records in `txn`, committed here (one round trip for a wave's runs);
        False, and none written, if one of them exists."""
        parents = {paths.runs(self.zk, r.pod) for r in runs}
        for parent in sorted(parents):
            self._ensure_parent(parent)
        for run in runs:
            txn.create(paths.run(self.zk, run.pod, run.revision),
                       json.dumps(run.to_json(), sort_keys=True).encode())
        err = commit_error(txn.commit())
        if isinstance(err, NodeExistsError):
            return False
        if isinstance(err, NoNodeError):  # a pod's runs were deleted since: made again
            self._parents -= parents
        if err is not None:
            raise err
        return True

    def _ensure_parent(self, parent: str) -> None:
        if parent not in self._parents:  # once per pod and process, not a round trip a run
            self.zk.ensure_path(parent)
            self._parents.add(parent)

    def ensure_parents(self, pods: Iterable[str]) -> None:
        """Make sure the run parents of `pods` exist, pipelined (before a wave's creates)."""
        todo = {paths.runs(self.zk, p) for p in pods} - self._parents
        if todo:
            self.zk.ensure_many(sorted(todo))
            self._parents |= todo

    def update(self, run: Run, txn: Any = None) -> Run:
        """Write `run` if it is still at `run.version` (`BadVersionError` otherwise)."""
        path = paths.run(self.zk, run.pod, run.revision)
        if txn is None:
            run.version = self.zk.set_json(path, run.to_json(), version=run.version)
            return run
        txn.set_data(path, json.dumps(run.to_json(), sort_keys=True).encode(), version=run.version)
        err = commit_error(txn.commit())
        if err is not None:
            raise err
        run.version += 1
        return run

    def delete(self, run: Run) -> None:
        self.zk.delete(paths.run(self.zk, run.pod, run.revision), version=run.version)

    # -- halts ---------------------------------------------------------------------

    def halt(self, revision: str, pod: str, error: str) -> None:
        try:
            self.zk.create_json(paths.halt(self.zk, revision),
                                {"revision": revision, "pod": pod, "error": error, "at": time.time()})
        except NodeExistsError:
            pass

    def halts(self, mirror: Mirror | None = None) -> dict[str, dict[str, Any]]:
        """revision -> its halt; from `mirror` (a `ZK.mirror` of migrations/halts) while it is
        fresh (the leader reads them every pass)."""
        base = paths.halts(self.zk)
        if mirror is not None and mirror.fresh:
            cached = {}
            for n in mirror.children(base) or []:
                try:
                    got = mirror.get_json(f"{base}/{n}")
                except ValueError as exc:  # still a halt (the direct read raises)
                    cached[n] = {"revision": n, "error": str(exc)}
                    continue
                if got:
                    cached[n] = got[0]
            if mirror.fresh:
                return cached
        out = {}
        for n in self.zk.children(base):
            got = self.zk.get_json(f"{base}/{n}")
            if got:
                out[n] = got[0]
        return out

    def unhalt(self, revision: str) -> bool:
        try:
            return bool(self.zk.delete(paths.halt(self.zk, revision)))
        except NoNodeError:
            return False


# -- the shard's own record ------------------------------------------------------------


def ensure_tables(conn: Connection) -> None:
    """Create the run table and the fence table on the shard if missing (MySQL/MariaDB), and
    the run table's `applied` column on a table made before it existed. One query when both
    are there (every run but a shard's first; was three statements each run)."""
    have = {(str(t), str(c)) for t, c in conn.execute(text(
        "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (:runs, :fence) "
        "AND COLUMN_NAME IN ('id', 'applied', 'name')"),
        {"runs": SHARD_TABLE, "fence": FENCE_TABLE})}
    if (SHARD_TABLE, "id") not in have:
        conn.execute(text(
            f"CREATE TABLE IF NOT EXISTS {SHARD_TABLE} ("
            " id BIGINT AUTO_INCREMENT PRIMARY KEY,"
            " revision VARCHAR(64) NOT NULL,"
            " state VARCHAR(16) NOT NULL,"
            " started DOUBLE NOT NULL,"
            " finished DOUBLE NULL,"
            " worker VARCHAR(255) NOT NULL,"
            " job_id VARCHAR(64) NOT NULL,"
            " fence BIGINT NOT NULL,"
            " error TEXT NULL,"
            " applied MEDIUMTEXT NULL,"
            " KEY revision_idx (revision))"))
    elif (SHARD_TABLE, "applied") not in have:  # a table made before the column existed
        conn.execute(text(f"ALTER TABLE {SHARD_TABLE} ADD COLUMN applied MEDIUMTEXT NULL"))
    if (FENCE_TABLE, "name") not in have:
        conn.execute(text(
            f"CREATE TABLE IF NOT EXISTS {FENCE_TABLE} ("
            " name VARCHAR(64) PRIMARY KEY,"
            " fence BIGINT NOT NULL,"
            " holder VARCHAR(255) NOT NULL,"
            " at DOUBLE NOT NULL)"))


class ShardLog:
    """One run's row in the shard's `podjobs_migrations` table."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.row_id: int | None = None
        #: the statements this run's row records as applied (record_applied)
        self.applied: list[str] = []

    def start(self, revision: str, worker: str, job_id: str, fence: int) -> None:
        res = self.conn.execute(
            text(f"INSERT INTO {SHARD_TABLE} (revision, state, started, worker, job_id, fence)"
                 " VALUES (:r, :s, :t, :w, :j, :f)"),
            {"r": revision, "s": RunState.RUNNING.value, "t": time.time(), "w": worker,
             "j": job_id, "f": fence})
        self.row_id = int(res.lastrowid)

    def record_applied(self, statements: list[str]) -> None:
        """The statements applied so far (applied.StatementLog calls it after each one),
        written through the raw connection: no SQLAlchemy event sees this write."""
        self.applied = list(statements)
        if self.row_id is None:
            return
        raw: Any = self.conn.connection.dbapi_connection
        cur = raw.cursor()
        try:
            cur.execute(f"UPDATE {SHARD_TABLE} SET applied = %s WHERE id = %s",
                        (json.dumps(statements), self.row_id))
        finally:
            cur.close()

    def finish(self, state: RunState, error: str = "") -> None:
        if self.row_id is None:
            return
        self.conn.execute(
            text(f"UPDATE {SHARD_TABLE} SET state=:s, finished=:t, error=:e WHERE id=:i"),
            {"s": state.value, "t": time.time(), "e": error or None, "i": self.row_id})


def last_run(conn: Connection, revision: str) -> dict[str, Any] | None:
    """The newest row of `revision` on the shard (state, error, applied: a list), or None."""
    row = conn.execute(text(
        f"SELECT id, state, error, applied FROM {SHARD_TABLE} WHERE revision = :r "
        f"ORDER BY id DESC LIMIT 1"), {"r": revision}).mappings().first()
    if row is None:
        return None
    from .applied import parse

    return {**dict(row), "applied": parse(row["applied"])}


def shard_history(conn: Connection) -> list[dict[str, Any]]:
    """Every run recorded on the shard, oldest first (empty when the table is missing)."""
    from sqlalchemy import inspect as sa_inspect

    if not sa_inspect(conn).has_table(SHARD_TABLE):
        return []
    rows = conn.execute(text(
        f"SELECT id, revision, state, started, finished, worker, job_id, fence, error, applied"
        f" FROM {SHARD_TABLE} ORDER BY id")).mappings()
    from .applied import parse

    return [{**dict(r), "applied": parse(r["applied"])} for r in rows]
