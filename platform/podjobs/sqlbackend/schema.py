"""Create or upgrade the SQL backend's tables with its own Alembic revisions (versions/).

The revisions are recorded in their own version table (tables.VERSION_TABLE), so a shard
whose application has its own Alembic history keeps it apart. Two processes starting at
once do not both create the tables: MySQL/MariaDB take a named lock (GET_LOCK), SQLite
its write lock (every transaction of the backend's engine is BEGIN IMMEDIATE),
PostgreSQL a transaction-scoped advisory lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from podjobs.sqlbackend.tables import VERSION_TABLE

HERE = Path(__file__).resolve().parent
#: seconds a starting process waits for another one creating the tables
LOCK_WAIT_S = 60


def script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(HERE), version_locations=[str(HERE / "versions")])


def head() -> str:
    rev = script_directory().get_current_head()
    assert rev is not None
    return rev


def current(conn: Connection) -> str | None:
    """The revision the tables are at (None: not created)."""
    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def upgrade(engine: Engine) -> str:
    """Bring the tables to the newest revision; returns it."""
    script = script_directory()
    target = head()
    with engine.connect() as conn:
        if conn.dialect.name in ("mysql", "mariadb"):
            got = conn.execute(text("SELECT GET_LOCK('podjobs_sql_schema', :t)"), {"t": LOCK_WAIT_S}).scalar()
            conn.commit()
            if got != 1:
                raise TimeoutError(f"another process held the schema lock for {LOCK_WAIT_S} s")
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(84221901)"))
                if current(conn) != target:
                    _run(script, conn, target)
        finally:
            if conn.dialect.name in ("mysql", "mariadb"):
                conn.execute(text("SELECT RELEASE_LOCK('podjobs_sql_schema')"))
                conn.commit()
    return target


def _run(script: ScriptDirectory, conn: Connection, target: str) -> None:
    def steps(rev: Any, _ctx: Any) -> Any:
        return script._upgrade_revs(target, rev)

    with EnvironmentContext(Config(), script, fn=steps, destination_rev=target) as env:
        env.configure(connection=conn, version_table=VERSION_TABLE, transactional_ddl=False)
        env.run_migrations()
