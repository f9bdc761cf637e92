"""`podjobs tenants assign|where|list|quota|top`: the tenant directory in ZooKeeper.

    podjobs tenants assign TENANT POD
    podjobs tenants assign --file CSV        (lines "tenant,pod"; "-" reads stdin)
    podjobs tenants where TENANT
    podjobs tenants list [--pod POD]
    podjobs tenants quota TENANT [--rate R] [--burst B] [--pending N] [--clear]
    podjobs tenants quota --pod POD [...]    (the default of the pod's tenants)
    podjobs tenants top [--pod POD] [--limit N]   (tenants nearest their quotas, per pod)
    podjobs tenants migrate-directory [--buckets N] [--chunk N]
                                             (old one-node-per-tenant layout -> buckets)

`podjobs tenants move` joins this group from cmd_moves. Options as for `podjobs pods`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections.abc import Iterable
from typing import Any

from podjobs.errors import BackendUnavailable, ConfigurationError
from podjobs.quota import FIELDS, Quota, Usage, effective, nearest, parse_limit
from podjobs.table import render

from .options import Commands, action_result, connect, print_json, zk_options

# -- tenants ------------------------------------------------------------------------


def read_assignments(lines: Iterable[str], source: str = "CSV") -> dict[str, str]:
    """tenant -> pod from "tenant,pod" lines (a "tenant,pod" header, blank lines and
    #-comments are skipped); `ConfigurationError` naming the line if one is wrong."""
    from podjobs.pods.topology import validate_name

    out: dict[str, str] = {}
    for n, row in enumerate(csv.reader(lines), 1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if n == 1 and [c.lower() for c in cells] == ["tenant", "pod"]:
            continue
        if len(cells) != 2 or not all(cells):
            raise ConfigurationError(f"{source} line {n}: expected 'tenant,pod', got {row!r}")
        tenant, pod = cells
        try:
            validate_name("tenant", tenant)
            validate_name("pod", pod)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{source} line {n}: {exc}") from None
        if out.get(tenant, pod) != pod:
            raise ConfigurationError(
                f"{source} line {n}: tenant {tenant!r} is listed for both {out[tenant]!r} and {pod!r}"
            )
        out[tenant] = pod
    return out


def _load_csv(path: str) -> dict[str, str]:
    if path == "-":
        return read_assignments(io.StringIO(sys.stdin.read()), "stdin")
    try:
        with open(path, newline="") as fh:
            return read_assignments(fh, path)
    except FileNotFoundError:
        raise ConfigurationError(f"--file {path} does not exist") from None


def cmd_tenants_assign(args: argparse.Namespace) -> int:
    from podjobs.pods.topology import TopologyStore

    if args.file:
        if args.tenant or args.pod:
            raise ConfigurationError("give either TENANT POD or --file CSV, not both")
        assignments = _load_csv(args.file)
        started = time.monotonic()
        with connect(args) as zk:
            summary = TopologyStore(zk).assign_many(assignments)
        took = time.monotonic() - started
        return action_result(
            args, "tenants assign", list(summary.assigned),
            f"assigned {len(summary.assigned)} tenant(s), {len(summary.unchanged)} already on "
            f"their pod, in {took:.2f}s", unchanged=len(summary.unchanged), seconds=round(took, 3))
    if not (args.tenant and args.pod):
        raise ConfigurationError("tenants assign needs TENANT POD (or --file CSV)")
    with connect(args) as zk:
        store = TopologyStore(zk)
        before = store.tenant(args.tenant)
        entry = store.assign(args.tenant, args.pod)
    msg = (f"assigned {entry.tenant} to {entry.pod}" if before is None
           else f"{entry.tenant} is already on {entry.pod} (unchanged)")
    return action_result(args, "tenants assign", [entry.tenant] if before is None else [], msg,
                         tenant=tenant_row(entry))


def cmd_tenants_where(args: argparse.Namespace) -> int:
    from podjobs.pods.topology import TopologyStore

    with connect(args) as zk:
        entry = TopologyStore(zk).where(args.tenant)
    if args.json:
        print_json(tenant_row(entry))
    else:
        move = json.dumps(entry.move, sort_keys=True) if entry.move else ""
        quota = json.dumps(entry.quota.to_json(), sort_keys=True) if entry.quota else ""
        print(
            render(
                ["tenant", "pod", "state", "move", "quota"],
                [[entry.tenant, entry.pod, entry.state.value, move, quota]],
            )
        )
    return 0


def cmd_tenants_list(args: argparse.Namespace) -> int:
    from podjobs.pods.topology import TopologyStore

    with connect(args) as zk:
        entries = TopologyStore(zk).tenants(pod=args.pod)
    if args.json:
        print_json([tenant_row(e) for e in entries])
    elif not entries:
        where = f" on pod {args.pod}" if args.pod else ""
        print(f"no tenants{where} (assign one with 'podjobs tenants assign TENANT POD')")
    else:
        print(
            render(["tenant", "pod", "state"], [[e.tenant, e.pod, e.state.value] for e in entries])
        )
    return 0


def cmd_tenants_migrate(args: argparse.Namespace) -> int:
    from podjobs.pods.migratedir import migrate_directory

    started = time.monotonic()
    with connect(args) as zk:
        summary = migrate_directory(
            zk, buckets=args.buckets, chunk=args.chunk,
            progress=None if args.json else (lambda line: print(line, flush=True)))
    took = time.monotonic() - started
    msg = (f"migrated {summary.migrated} tenant(s) into {summary.buckets} buckets "
           f"({summary.already} already there, {summary.removed} old node(s) deleted) "
           f"in {took:.2f}s")
    if summary.left:
        msg += f"; {summary.left} old node(s) left (see the log), run it again"
    return action_result(args, "tenants migrate-directory", [], msg, seconds=round(took, 3),
                         **summary.to_dict())


def tenant_row(entry: Any) -> dict[str, Any]:
    """The `tenant` noun: tenant, pod, state, move (None unless moving), version, quota (its
    own, None when it has none)."""
    return {"tenant": entry.tenant, "pod": entry.pod, "state": entry.state.value,
            "move": entry.move, "version": entry.version,
            "quota": entry.quota.to_json() if entry.quota is not None else None}


# -- quotas -------------------------------------------------------------------------


def _quota_change(args: argparse.Namespace, old: Quota | None) -> Quota | None:
    """The quota after the command's --rate/--burst/--pending/--clear over `old`."""
    if args.clear:
        return None
    fields = dict(old.to_json()) if old is not None else {}
    given = False
    for name in FIELDS:
        text = getattr(args, name)
        if text is None:
            continue
        given = True
        value = parse_limit(text, name)
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    if not given:
        raise ConfigurationError("give --rate, --burst or --pending (or --clear); "
                                 "'podjobs tenants where TENANT' shows the current quota")
    try:
        return Quota.from_json(fields) if fields else None
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def cmd_tenants_quota(args: argparse.Namespace) -> int:
    from podjobs.pods.topology import TopologyStore

    if (args.tenant is None) == (args.pod is None):
        raise ConfigurationError("name a TENANT, or --pod POD for the default of a pod's tenants")
    with connect(args) as zk:
        store = TopologyStore(zk)
        if args.pod is not None:
            pod = store.set_pod_quota(args.pod, _quota_change(args, store.pod(args.pod).quota))
            own = pod.quota
            eff = effective(pod.quota, None)
            what = f"pod {pod.name}'s default tenant quota"
        else:
            entry = store.where(args.tenant)
            entry = store.set_tenant_quota(args.tenant, _quota_change(args, entry.quota))
            own = entry.quota
            eff = effective(store.pod(entry.pod).quota, entry.quota)
            what = f"tenant {entry.tenant}'s quota"
    shown = json.dumps(own.to_json(), sort_keys=True) if own is not None else "none"
    shown_eff = json.dumps(eff.to_json(), sort_keys=True) if eff is not None else "unlimited"
    if args.json:
        print_json({"tenant": args.tenant, "pod": args.pod,
                    "quota": own.to_json() if own is not None else {},
                    "effective": eff.to_json() if eff is not None else None})
    else:
        print(f"{what} is now {shown} (in effect: {shown_eff})")
    return 0


def cmd_tenants_top(args: argparse.Namespace) -> int:
    from podjobs.backend import RedisBackend
    from podjobs.exits import Exit
    from podjobs.gateway import UNREACHABLE
    from podjobs.pods.topology import TopologyStore
    from podjobs.table import one_line

    with connect(args) as zk:
        store = TopologyStore(zk)
        pods = store.pods()
        entries = store.tenants(pod=args.pod)
    usages: list[Usage] = []
    code = 0
    for name in sorted({e.pod for e in entries}):
        pod = pods.get(name)
        if pod is None:
            continue
        limited = {e.tenant: q for e in entries if e.pod == name
                   and (q := effective(pod.quota, e.quota)) is not None}
        if not limited:
            continue
        try:
            backend = RedisBackend(pod.redis_url, check=False)
            try:
                got = backend.quota_usage(limited)
            finally:
                backend.close()
        except (BackendUnavailable, *UNREACHABLE) as exc:  # type: ignore[misc]
            print(f"podjobs: pod {name}: Redis unreachable ({one_line(str(exc))}); left out",
                  file=sys.stderr)
            code = int(Exit.UNREACHABLE)
            continue
        usages += [u._replace(pod=name) for u in got]
    ranked = nearest(usages, args.limit)
    if args.json:
        print_json([u.to_dict() for u in ranked])
    elif not ranked:
        where = f" on pod {args.pod}" if args.pod else ""
        print(f"no tenant has a quota{where} (set one with 'podjobs tenants quota TENANT "
              f"--rate R --pending N', or a pod's default with --pod POD)")
    else:
        def pct(x: float | None) -> str:
            return "-" if x is None else f"{x:.0%}"

        print(render(["pod", "tenant", "near", "pending", "cap", "pending%", "rate/s", "tokens",
                      "rate%"],
                     [[u.pod or "", u.tenant, pct(u.nearness), str(u.pending),
                       "-" if u.quota.pending is None else str(u.quota.pending),
                       pct(u.pending_used), "-" if u.quota.rate is None else f"{u.quota.rate:g}",
                       "-" if u.tokens is None else f"{u.tokens:.1f}", pct(u.rate_used)]
                      for u in ranked]))
    return code


# -- parser -------------------------------------------------------------------------


def register(cmds: Commands) -> None:
    common = zk_options()
    cmds.group("tenants", "the tenant directory: assign, where, list, quota, top")
    p = cmds.command("assign", "put new tenants on a pod", cmd_tenants_assign, under="tenants",
                     parents=[common], noun="action")
    p.add_argument("tenant", nargs="?", metavar="TENANT")
    p.add_argument("pod", nargs="?", metavar="POD")
    p.add_argument(
        "--file", metavar="CSV", help="'tenant,pod' lines to assign in bulk ('-': stdin)"
    )
    p = cmds.command("where", "the pod a tenant lives on", cmd_tenants_where, under="tenants",
                     parents=[common], noun="tenant")
    p.add_argument("tenant", metavar="TENANT")
    p = cmds.command("list", "tenants and their pods", cmd_tenants_list, under="tenants",
                     parents=[common], noun="tenant")
    p.add_argument("--pod", metavar="POD", help="only the tenants of this pod")
    p = cmds.command("quota", "set a tenant's quota (or a pod's default): rate, burst, pending",
                     cmd_tenants_quota, under="tenants", parents=[common], noun="quota")
    p.add_argument("tenant", nargs="?", metavar="TENANT")
    p.add_argument("--pod", metavar="POD", help="set the default quota of this pod's tenants")
    p.add_argument("--rate", metavar="R", help="jobs a second the tenant may enqueue ('none' clears)")
    p.add_argument("--burst", metavar="B", help="most jobs at once (the token bucket's size; "
                   "default one second of --rate)")
    p.add_argument("--pending", metavar="N", help="most jobs enqueued and not yet started "
                   "('none' clears)")
    p.add_argument("--clear", action="store_true", help="remove the whole quota")
    p = cmds.command("top", "tenants nearest their quotas (rate, pending), per pod",
                     cmd_tenants_top, under="tenants", parents=[common], noun="quota_usage")
    p.add_argument("--pod", metavar="POD", help="only the tenants of this pod")
    p.add_argument("--limit", type=int, metavar="N", help="show the N nearest (default all)")
    p = cmds.command("migrate-directory",
                     "move tenants from one node each into hashed buckets (idempotent, resumable)",
                     cmd_tenants_migrate, under="tenants", parents=[common], noun="action")
    p.add_argument("--buckets", type=int, default=None, metavar="N",
                   help="bucket count when the bucket layout is created (default 1024)")
    p.add_argument("--chunk", type=int, default=5000, metavar="N",
                   help="old nodes read and deleted per round (default 5000)")
