"""Half-applied revisions: the statements a run applied, and resuming after them.

MySQL and MariaDB commit each DDL statement on its own: a revision whose second
statement fails leaves its first one applied, and running it again from the start
fails on it ("Duplicate column name"). So:

1. `StatementLog(shard_log, earlier, resumable)` hooks the DDL connection while the
   revision's `upgrade()` runs: after each statement that writes (`writes(sql)`: not a
   SELECT, SHOW, ...), the statements applied so far are written to the run's row on the
   shard (`podjobs_migrations.applied`, a JSON list), through the raw connection, so the
   record survives the runner (a kill -9 included).
2. `plan(earlier, resumable)` (pure) decides what a new run of a revision does with the
   statements an earlier, unfinished run applied (the last row of the revision on the
   shard, failed, cancelled or stopped midway):
   - none: run from the start;
   - some, and the revision declares `resumable = True` (its statements are the same on
     every run, in the same order): skip those, checking each skipped statement's text
     against the recorded one (`HalfApplied` at the first that differs), and go on after
     the last one;
   - some, not resumable: when a DDL statement is among them (`ddl(sql)`), `HalfApplied`
     before anything runs, naming them and the ways out (fix the shard by hand and `skip`,
     or make the revision resumable or idempotent); only row writes: run from the start
     (as before; a revision's own data statements are its business).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection

#: statements that change nothing (not recorded, never skipped: their results are read)
_READS = re.compile(r"^\s*(select|show|describe|desc|explain|with|do|set|help)\b", re.I)
_DDL = re.compile(r"^\s*(create|alter|drop|rename|truncate)\b", re.I)
#: what a skipped statement becomes (MySQL's no-op)
NOOP = "DO 0"


class HalfApplied(Exception):
    """A revision an earlier run left half applied cannot be run again as it is."""


def writes(sql: str) -> bool:
    """True for a statement that changes the shard (DDL, DML), False for reads."""
    return not _READS.match(sql)


def ddl(sql: str) -> bool:
    """True for a DDL statement (MySQL commits it on its own; it cannot be rolled back)."""
    return bool(_DDL.match(sql))


def normal(sql: str) -> str:
    """A statement's text compared across runs: whitespace collapsed."""
    return " ".join(sql.split())


def plan(revision: str, earlier: list[str], resumable: bool) -> int:
    """How many statements of `revision` to skip (see the module docstring)."""
    if not earlier:
        return 0
    if not resumable:
        applied_ddl = [s for s in earlier if ddl(s)]
        if not applied_ddl:
            return 0  # only row writes: the revision runs again from the start, as written
        listed = "; ".join(normal(s)[:120] for s in applied_ddl)
        raise HalfApplied(
            f"revision {revision} is half applied on this shard: an earlier run applied "
            f"{len(applied_ddl)} DDL statement(s) ({listed}) before it stopped, and MySQL "
            f"cannot roll DDL back. Either undo or finish them by hand and 'podjobs migrations skip "
            f"{revision} --pod POD', or declare 'resumable = True' in the revision (its "
            f"statements run in the same order every time; a retry goes on after the last "
            f"applied one), or make each statement idempotent")
    return len(earlier)


@dataclass
class StatementLog:
    """Records the statements a run applies; skips those an earlier run applied. A context
    manager: hooked on `conn` while entered (around the revision's upgrade())."""

    conn: Connection
    shard_log: Any  # runs.ShardLog: the run's row
    revision: str
    earlier: list[str] = field(default_factory=list)
    skip: int = 0
    applied: list[str] = field(default_factory=list)
    _seen: int = 0
    _skipping: bool = False

    def __enter__(self) -> StatementLog:
        event.listen(self.conn, "before_cursor_execute", self._before, retval=True)
        event.listen(self.conn, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.conn, "before_cursor_execute", self._before)
        event.remove(self.conn, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> tuple[str, Any]:
        self._skipping = False
        if not writes(statement):
            return statement, parameters
        i = self._seen
        self._seen += 1
        if i < self.skip:
            if normal(self.earlier[i]) != normal(statement):
                raise HalfApplied(
                    f"revision {self.revision} resumes after {self.skip} applied statement(s), "
                    f"but its statement {i + 1} is now {normal(statement)[:200]!r}, not "
                    f"{normal(self.earlier[i])[:200]!r} as applied: a resumable revision must "
                    f"run the same statements in the same order")
            self._skipping = True
            return NOOP, ()
        return statement, parameters

    def _after(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        if self._skipping or not writes(statement):
            return
        self.applied.append(statement)
        self.shard_log.record_applied(self.earlier[:self.skip] + self.applied)

    @property
    def all_applied(self) -> list[str]:
        return self.earlier[:self.skip] + self.applied


def parse(raw: str | None) -> list[str]:
    """The `applied` column (a JSON list of statements; NULL or junk -> [])."""
    if not raw:
        return []
    try:
        v = json.loads(raw)
    except ValueError:
        return []
    return [str(s) for s in v] if isinstance(v, list) else []
