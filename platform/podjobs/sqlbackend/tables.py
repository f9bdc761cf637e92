"""The SQL backend's tables (SQLAlchemy Core), as the Alembic revisions in versions/ make them.

| table       | what it holds (Redis counterpart)                                               |
|-------------|---------------------------------------------------------------------------------|
| pj_ready    | jobs ready to run, in `seq` order (the queue lists); a row with `worker` set is  |
|             | reserved by that worker (its in-flight hash), `request` the reservation's id    |
| pj_due      | scheduled jobs and retries (`kind` "sched" / "retry"), due at `due_ms`           |
| pj_dead     | the dead set                                                                   |
| pj_unique   | unique keys: the owning job's id, and when the key lapses                       |
| pj_workers  | registered workers and their lease (`expires_ms`, renewed by the heartbeat)     |
| pj_paused   | paused queues (`podjobs queues pause`; pj:paused)                                |
| pj_requests | enqueue request markers: an enqueue's first job id, kept REQUEST_TTL_MS, so a   |
|             | re-sent enqueue (lost commit reply) writes nothing twice (pj:req:<id>)          |
| pj_iterations | iteration jobs' checkpoints and states (pj:iter:{id}; iteration/sqlstore.py)  |
| pj_status   | tracked jobs' status records: the fields as a JSON object of strings, and when  |
|             | the record lapses (pj:status:{id} and its TTL; sqlbackend/status.py)            |

tests/test_sqlbackend.py checks that the revisions make exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.dialects import mysql

#: the version table of the backend's own Alembic revisions (not the shard's alembic_version)
VERSION_TABLE = "pj_schema_version"

#: an auto-increment 64-bit key (SQLite only auto-increments INTEGER PRIMARY KEY)
SEQ = BigInteger().with_variant(Integer(), "sqlite")
#: a payload: up to 4 GiB on MySQL/MariaDB (TEXT stops at 64 KiB)
PAYLOAD = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

metadata = MetaData()

ready = Table(
    "pj_ready", metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("queue", String(100), nullable=False),
    Column("job_id", String(80), nullable=False),
    Column("worker", String(160), nullable=False, server_default=""),
    Column("request", String(40), nullable=False, server_default=""),
    Column("payload", PAYLOAD, nullable=False),
    Index("pj_ready_take", "queue", "worker", "seq"),
    Index("pj_ready_owner", "worker", "job_id"),
)

due = Table(
    "pj_due", metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("queue", String(100), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("due_ms", BigInteger(), nullable=False),
    Column("job_id", String(80), nullable=False),
    Column("payload", PAYLOAD, nullable=False),
    Index("pj_due_when", "queue", "due_ms"),
)

dead = Table(
    "pj_dead", metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("queue", String(100), nullable=False),
    Column("job_id", String(80), nullable=False),
    Column("died_ms", BigInteger(), nullable=False),
    Column("payload", PAYLOAD, nullable=False),
    Index("pj_dead_when", "died_ms"),
    Index("pj_dead_job", "job_id"),
)

unique = Table(
    "pj_unique", metadata,
    Column("ukey", String(190), primary_key=True),
    Column("owner", String(80), nullable=False),
    Column("expires_ms", BigInteger(), nullable=False),
)

workers = Table(
    "pj_workers", metadata,
    Column("worker_id", String(160), primary_key=True),
    Column("expires_ms", BigInteger(), nullable=False),
    Column("queues", Text(), nullable=False),
    Column("info", Text(), nullable=False),
)

paused = Table(
    "pj_paused", metadata,
    Column("queue", String(100), primary_key=True),
)

requests = Table(
    "pj_requests", metadata,
    Column("request", String(80), primary_key=True),
    Column("expires_ms", BigInteger(), nullable=False),
    Index("pj_requests_expiry", "expires_ms"),
)

iterations = Table(
    "pj_iterations", metadata,
    Column("job_id", String(80), primary_key=True),
    Column("job", String(200), nullable=False, server_default=""),
    Column("queue", String(100), nullable=False, server_default=""),
    Column("tenant", String(100), nullable=False, server_default=""),
    Column("state", String(16), nullable=False),
    Column("cursor", PAYLOAD, nullable=True),
    Column("done", BigInteger(), nullable=False, server_default="0"),
    Column("total", BigInteger(), nullable=True),
    Column("runs", Integer(), nullable=False, server_default="0"),
    Column("interrupted", Integer(), nullable=False, server_default="0"),
    Column("checkpoints", Integer(), nullable=False, server_default="0"),
    Column("control", String(16), nullable=False, server_default=""),
    Column("run", String(80), nullable=False, server_default=""),
    Column("reason", String(200), nullable=False, server_default=""),
    Column("error", Text(), nullable=True),
    Column("parked", PAYLOAD, nullable=True),
    Column("updated_ms", BigInteger(), nullable=False),
)

status = Table(
    "pj_status", metadata,
    Column("job_id", String(80), primary_key=True),
    Column("fields", PAYLOAD, nullable=False),
    Column("expires_ms", BigInteger(), nullable=False),
    Index("pj_status_expiry", "expires_ms"),
)
