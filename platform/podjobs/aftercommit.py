"""Enqueue after a SQLAlchemy session commits (for applications without the outbox).

    with podjobs.after_commit(session):
        session.add(Order(id=17))
        h = send_receipt.enqueue(17, tenant="shop-17")   # not yet: kept on the session
        session.commit()                                 # committed: now enqueued; h.id is set

1. Inside the block (`AFTER_COMMIT`, a contextvar of podjobs.client), `job.enqueue(...)`
   keeps the call on the session (`session.info`) and returns a handle without an id.
2. The session's `after_commit` event (its outermost transaction committed) enqueues the
   kept calls through the configured client, in the order they were made, and fills in
   each handle (id, pod, enqueued). A commit made after the block ends still sends them.
3. A rollback, or a transaction that ends without a commit (the session closed), drops
   them: nothing is enqueued for work that was not committed.

Unlike the outbox (podjobs.transactional) this is not atomic: a process that dies between
the commit and the enqueue (or a Redis that refuses it: the error is raised from
`session.commit()`, after the commit) loses the jobs. Use `db=` / `podjobs.outbox` when that
matters; this needs no table on the shard and no relay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from podjobs.client import AFTER_COMMIT, JobHandle, check_arguments, get_client
from podjobs.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, SessionTransaction

    from podjobs.jobs import Call

KEY = "podjobs_after_commit"


@dataclass
class Pending:
    call: Call
    tenant: str | None
    pod: str | None
    delay: float | timedelta | None
    at: datetime | float | None
    handle: JobHandle


def _listen(session: Session) -> None:
    if session.info.get(KEY + "_hooked"):
        return
    event.listen(session, "after_commit", _after_commit)
    event.listen(session, "after_transaction_end", _after_end)
    session.info[KEY + "_hooked"] = True


def defer(session: Session, call: Call, *, tenant: str | None = None, pod: str | None = None,
          delay: float | timedelta | None = None,
          at: datetime | float | None = None) -> JobHandle:
    """Keep `call` on `session` until its transaction commits (see the module docstring)."""
    check_arguments(call)
    handle = JobHandle("", call.job.name, call.queue or call.job.options.queue, pod, tenant,
                       enqueued=False)
    _listen(session)
    session.info.setdefault(KEY, []).append(Pending(call, tenant, pod, delay, at, handle))
    return handle


def _after_commit(session: Session) -> None:
    pending: list[Pending] = session.info.pop(KEY, [])
    client = get_client()
    for p in pending:
        h = client.enqueue_call(p.call, tenant=p.tenant, pod=p.pod, delay=p.delay, at=p.at)
        p.handle.id, p.handle.pod, p.handle.enqueued = h.id, h.pod, h.enqueued


def _after_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost one ended without a commit: dropped
        session.info.pop(KEY, None)


@contextlib.contextmanager
def after_commit(session: Any) -> Iterator[Any]:
    """Inside the block, `job.enqueue(...)` waits for `session` to commit (module docstring)."""
    if not hasattr(session, "info") or not hasattr(session, "commit"):
        raise ConfigurationError(
            f"podjobs.after_commit needs a SQLAlchemy Session, got {type(session).__name__}; "
            f"pass the session whose commit should send the jobs")
    token = AFTER_COMMIT.set(session)
    try:
        yield session
    finally:
        AFTER_COMMIT.reset(token)
