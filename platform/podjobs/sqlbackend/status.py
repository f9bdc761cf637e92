"""Tracked jobs' status records on the SQL backend (pj_status), written in the transaction of
the queue change they belong to, as the Lua scripts write pj:status:{id} on Redis.

1. A row holds the record's fields (a JSON object of strings, the Redis hash's fields) and
   when it lapses (`expires_ms`, the hash's TTL). An expired row reads as no record; the
   promote sweep deletes them (SqlBackend.promote).
2. `write` is the Lua include status.lua's write_status: the transition's own fields
   (updated_ms, payload, ...), then the caller's (`StatusWrite.fields`), then the dropped
   names, and the new expiry; the row is locked while it is read (SELECT ... FOR UPDATE).
3. The builders of the fields stay in podjobs.status (shared with Redis).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from podjobs.sqlbackend.tables import status as table
from podjobs.status import StatusWrite

#: states after which a late start never writes (ack_status.lua's `final`)
FINAL = frozenset({"succeeded", "failed", "dead", "cancelled"})
#: states (and no record: "") a job acked before it ran may start from (ack_status.lua's `waiting`)
WAITING = frozenset({"", "queued", "retrying"})


def _decode(raw: str) -> dict[str, str]:
    try:
        got = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in got.items()} if isinstance(got, dict) else {}


def read(c: Connection, job_id: str, now_ms: int, *, lock: bool = False) -> dict[str, str] | None:
    """The job's record (None: none, or expired); `lock`: FOR UPDATE."""
    q = select(table.c.fields, table.c.expires_ms).where(table.c.job_id == job_id)
    row = c.execute(q.with_for_update() if lock else q).first()
    if row is None or int(row[1]) <= now_ms:
        return None
    return _decode(str(row[0]))


def write(c: Connection, job_id: str, now_ms: int, own: Mapping[str, object], sw: StatusWrite | None,
          drop: Iterable[str] = (), ttl_s: int | None = None,
          current: dict[str, str] | None = None, lock: bool = True) -> dict[str, str]:
    """Set `own` then `sw.fields` on the job's record, drop `drop`, keep it `ttl_s` seconds
    (default: sw.ttl_s). `current`: the record as the caller read it under lock. `lock`
    False: a new job's record (enqueue): read without FOR UPDATE, so no gap lock on
    MySQL/MariaDB makes two enqueues of new records deadlock."""
    exists = current is not None
    if current is None:
        q = select(table.c.fields, table.c.expires_ms).where(table.c.job_id == job_id)
        row = c.execute(q.with_for_update() if lock else q).first()
        exists = row is not None
        current = _decode(str(row[0])) if row is not None and int(row[1]) > now_ms else {}
    out = dict(current)
    out.update({k: str(v) for k, v in own.items()})
    if sw is not None:
        out.update(_decode(sw.fields))
    for k in drop:
        out.pop(k, None)
    ttl = ttl_s if ttl_s is not None else (sw.ttl_s if sw is not None else 0)
    values = {"fields": json.dumps(out, separators=(",", ":"), ensure_ascii=False),
              "expires_ms": now_ms + int(ttl) * 1000}
    if exists:
        c.execute(update(table).where(table.c.job_id == job_id).values(**values))
    else:
        c.execute(insert(table).values(job_id=job_id, **values))
    return out


def read_many(c: Connection, job_ids: Sequence[str], now_ms: int) -> dict[str, dict[str, str]]:
    """The rows of these jobs, locked (FOR UPDATE): job id -> record ({} when expired: the
    row is there, the record is not). A job without a row is not in the answer."""
    if not job_ids:
        return {}
    rows = c.execute(select(table.c.job_id, table.c.fields, table.c.expires_ms)
                     .where(table.c.job_id.in_(list(set(job_ids)))).with_for_update()).all()
    return {str(j): (_decode(str(f)) if int(e) > now_ms else {}) for j, f, e in rows}


def write_many(c: Connection, now_ms: int, found: dict[str, dict[str, str]],
               writes: Sequence[tuple[str, Mapping[str, object], StatusWrite, Iterable[str]]]) -> None:
    """`write` for many jobs in two statements (an executemany UPDATE and INSERT): each
    (job id, own fields, StatusWrite, dropped names) onto `found` (read_many's answer, under
    its locks; updated here, so a job written twice takes both in order)."""
    exists = set(found)
    ups: dict[str, dict[str, object]] = {}
    news: dict[str, dict[str, object]] = {}
    for jid, own, sw, drop in writes:
        out = dict(found.get(jid) or {})
        out.update({k: str(v) for k, v in own.items()})
        out.update(_decode(sw.fields))
        for k in drop:
            out.pop(k, None)
        row = {"b_job": jid, "b_fields": json.dumps(out, separators=(",", ":"), ensure_ascii=False),
               "b_exp": now_ms + int(sw.ttl_s) * 1000}
        (ups if jid in exists else news)[jid] = row
        found[jid] = out
    if news:
        c.execute(insert(table), [{"job_id": r["b_job"], "fields": r["b_fields"],
                                   "expires_ms": r["b_exp"]} for r in news.values()])
    if ups:
        c.execute(update(table).where(table.c.job_id == bindparam("b_job"))
                  .values(fields=bindparam("b_fields"), expires_ms=bindparam("b_exp")),
                  list(ups.values()))


def prune(c: Connection, now_ms: int) -> int:
    """Delete expired records."""
    return int(c.execute(delete(table).where(table.c.expires_ms < now_ms)).rowcount)


def job_id_of(sw: StatusWrite) -> str:
    """The job id a StatusWrite's key (pj:status:{id}) names."""
    return sw.key.rsplit(":", 1)[-1]
