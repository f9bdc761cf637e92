"""The demo's data reconciliation: a periodic job that runs once per tick on every pod and
looks for inconsistencies in that pod's shard.

`reconcile` (`@podjobs.periodic(CRON, per_pod=True)`, default every 10 s; set
$PODJOBS_DEMO_RECONCILE_CRON the same for the scheduler and the workers to change
it) checks the demo's tables that exist on the shard (demo/app.py):

- `misplaced`: `orders` rows whose `pod` column names another pod (a job ran on
  the wrong pod, or a row was copied without its tenant);
- `duplicate_orders`: the same (tenant, order_no) more than once (a job applied twice);
- `order_gaps`: order numbers of a tenant that are not 1..max (lost orders);
- `orphans`: rows of a tenant that the directory places on another pod, or does
  not know (tenants being moved are left alone); only when the worker has a
  pod-aware client (`podjobs.configure(zk=...)` or $PODJOBS_ZK);
- `bad_fingerprints`: `accounts` rows whose backfilled fingerprint is not the
  value the backfill computes.

Each finding goes to the job logger (a warning; one info line when the shard is
clean) and the run adds one row to `reconcile_reports` on the shard (created if
missing): pod, tick, problems, the findings as JSON. Nothing is repaired.
`find_inconsistencies(conn, pod, placements)` is the check itself, for tests and
scripts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    distinct,
    func,
    inspect,
    literal,
    select,
    union,
)

import podjobs
from demo.app import FINGERPRINT_MOD, FINGERPRINT_MUL, accounts, orders
from podjobs.cron import tick_of

CRON = os.environ.get("PODJOBS_DEMO_RECONCILE_CRON", "* * * * * */10")
#: examples kept per finding
EXAMPLES = 5

reconcile_metadata = MetaData()
reconcile_reports = Table(
    "reconcile_reports", reconcile_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pod", String(16), nullable=False),
    Column("tick", Double, nullable=True),       # the cron tick (epoch s); NULL if run by hand
    Column("checked_at", Double, nullable=False),
    Column("problems", Integer, nullable=False),  # rows or tenants concerned, all findings
    Column("details", Text, nullable=False),      # JSON list of findings
)


@dataclass
class Finding:
    kind: str
    count: int
    examples: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.kind}: {self.count} (e.g. {', '.join(self.examples)})"


def find_inconsistencies(conn: Connection, pod: str,
                         placements: Mapping[str, tuple[str, str]] | None = None) -> list[Finding]:
    """What is inconsistent on `pod`'s shard; `placements` = tenant -> (pod, state) from
    the directory (None: the orphan check is skipped)."""
    have = set(inspect(conn).get_table_names())
    found: list[Finding] = []

    rows: list[Any]

    def add(kind: str, rows: list[Any], count: int | None = None) -> None:
        if rows:
            found.append(Finding(kind, len(rows) if count is None else count,
                                 [" ".join(str(v) for v in r) for r in rows[:EXAMPLES]]))

    if "orders" in have:
        o = orders.c
        rows = list(conn.execute(select(o.id, o.tenant, o.pod).where(o.pod != pod)
                                 .order_by(o.id)))
        add("misplaced", rows)
        dup = (select(o.tenant, o.order_no, func.count().label("n"))
               .group_by(o.tenant, o.order_no).having(func.count() > 1)
               .order_by(o.tenant, o.order_no))
        rows = list(conn.execute(dup))
        add("duplicate_orders", rows, sum(r.n - 1 for r in rows))
        gaps = (select(o.tenant, (func.max(o.order_no) - func.count(distinct(o.order_no)))
                       .label("missing"))
                .group_by(o.tenant)
                .having(func.max(o.order_no) != func.count(distinct(o.order_no)))
                .order_by(o.tenant))
        rows = list(conn.execute(gaps))
        add("order_gaps", rows, sum(max(0, int(r.missing)) for r in rows))
    if "accounts" in have:
        a = accounts.c
        want = a.id * FINGERPRINT_MUL % FINGERPRINT_MOD
        rows = list(conn.execute(select(a.id, a.tenant, a.fingerprint)
                                 .where(and_(a.fingerprint.is_not(None), a.fingerprint != want))
                                 .order_by(a.id)))
        add("bad_fingerprints", rows)
    if placements is not None:
        parts = [select(t.c.tenant, literal(t.name).label("tbl")).distinct()
                 for t in (orders, accounts) if t.name in have]
        if parts:
            q = union(*parts) if len(parts) > 1 else parts[0]
            rows = list(conn.execute(q))
            orphans = []
            for tenant, table in sorted(tuple(r) for r in rows):
                where = placements.get(tenant)
                if where is None:
                    orphans.append((tenant, table, "unknown"))
                elif where[1] == "active" and where[0] != pod:
                    orphans.append((tenant, table, f"lives on {where[0]}"))
            add("orphans", orphans)
    return found


def _placements() -> dict[str, tuple[str, str]] | None:
    """tenant -> (pod, state) from the process's pod-aware client, if it has one."""
    try:
        client = podjobs.get_client()
    except podjobs.ConfigurationError:
        return None
    router = getattr(client, "router", None)
    if router is None:
        return None
    return {t: (e.pod, str(getattr(e.state, "value", e.state)))
            for t, e in router.directory.tenants().items()}


@podjobs.periodic(CRON, per_pod=True, catch_up="skip", grace=30, name="demo.reconcile",
                  queue="low", retries=0)
def reconcile(ctx: podjobs.Context) -> int:
    """Check this pod's shard; log the findings and record a report row. Returns the
    number of problems."""
    pod = ctx.pod or "?"
    info = tick_of(ctx)
    placements = _placements()
    reconcile_metadata.create_all(ctx.db.get_bind(), checkfirst=True)
    findings = find_inconsistencies(ctx.db.connection(), pod, placements)
    problems = sum(f.count for f in findings)
    for f in findings:
        ctx.logger.warning("reconcile %s: %s", pod, f)
    if not findings:
        ctx.logger.info("reconcile %s: shard consistent%s", pod,
                        "" if placements is not None else " (orphans not checked: no directory)")
    ctx.db.execute(reconcile_reports.insert().values(
        pod=pod, tick=info["tick"] if info else None, checked_at=time.time(), problems=problems,
        details=json.dumps([asdict(f) for f in findings])))
    return problems
