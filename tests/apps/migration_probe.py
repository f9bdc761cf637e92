"""What the test revisions in tests/apps/migrations do around their DDL, for the scheduler tests.

Each revision calls `run(rev, *steps)`: it records 'start', then before each
step reads its control row (fail / pause) from the shard's `mig_control`
table, runs the step and records 'stepN', then records 'end' - all in the
shard's `mig_probe` table, through the migration's own connection (so every
statement is a guarded step). Tests create both tables before the scheduler
starts (`create_tables`) and read `events` to check order and overlap.

A negative pause (`HOLD`) holds the revision before each step until the test releases it
(`control(..., pause=0.1)`): the revision re-reads its control row every `HOLD_POLL` s
through the guarded connection, so whatever a test does to the runner meanwhile (a
cancel, a killed connection, a take-over) stops it at the next read, before the step, as
it would stop a step's statement - an event the test causes, not a race against a sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from alembic import op
from sqlalchemy import text
from sqlalchemy.engine import Connection

DEFAULT_PAUSE = 0.1
HOLD = -1.0  #: pause value: hold before each step until the row says otherwise
HOLD_POLL = 0.05
HOLD_MAX = 120.0  #: a held revision goes on by itself after this long (a test that forgot it)


def create_tables(conn: Connection) -> None:
    conn.execute(text("CREATE TABLE IF NOT EXISTS mig_probe (id BIGINT AUTO_INCREMENT PRIMARY KEY,"
                      " rev VARCHAR(32), event VARCHAR(16), t DOUBLE, conn_id BIGINT)"))
    conn.execute(text("CREATE TABLE IF NOT EXISTS mig_control (rev VARCHAR(32) PRIMARY KEY,"
                      " fail INT NOT NULL DEFAULT 0, pause DOUBLE NOT NULL DEFAULT 0)"))


def _event(bind: Any, rev: str, event: str) -> None:
    bind.execute(text("INSERT INTO mig_probe (rev, event, t, conn_id) VALUES "
                      "(:r, :e, :t, CONNECTION_ID())"), {"r": rev, "e": event, "t": time.time()})


def _control(bind: Any, rev: str) -> tuple[int, float]:
    row = bind.execute(text("SELECT fail, pause FROM mig_control WHERE rev = :r"),
                       {"r": rev}).first()
    return (int(row[0]), float(row[1])) if row else (0, DEFAULT_PAUSE)


def run(rev: str, *steps: Callable[[], None]) -> None:
    bind = op.get_bind()
    _event(bind, rev, "start")
    for i, step in enumerate(steps, 1):
        fail, pause = _control(bind, rev)
        if fail and i == fail:
            raise RuntimeError(f"revision {rev} fails at step {i} (mig_control says so)")
        held_until = time.monotonic() + HOLD_MAX
        while pause < 0 and time.monotonic() < held_until:
            time.sleep(HOLD_POLL)  # held: each read below is a guarded statement
            fail, pause = _control(bind, rev)
        time.sleep(max(0.0, pause))  # the revision's own pace (its "work")
        step()
        _event(bind, rev, f"step{i}")
    _event(bind, rev, "end")


def events(conn: Connection) -> list[tuple[str, str, float]]:
    return [(r, e, t) for r, e, t in conn.execute(text("SELECT rev, event, t FROM mig_probe ORDER BY id"))]
