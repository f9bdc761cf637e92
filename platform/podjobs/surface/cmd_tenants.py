"""`podjobs tenants assign|where|list`: the tenant directory in ZooKeeper.

    podjobs tenants assign TENANT POD
    podjobs tenants assign --file CSV        (lines "tenant,pod"; "-" reads stdin)
    podjobs tenants where TENANT
    podjobs tenants list [--pod POD]
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

from podjobs.errors import ConfigurationError
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
        print(
            render(
                ["tenant", "pod", "state", "move"],
                [[entry.tenant, entry.pod, entry.state.value, move]],
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
    """The `tenant` noun: tenant, pod, state, move (None unless moving), version."""
    return {"tenant": entry.tenant, "pod": entry.pod, "state": entry.state.value,
            "move": entry.move, "version": entry.version}


# -- parser -------------------------------------------------------------------------


def register(cmds: Commands) -> None:
    common = zk_options()
    cmds.group("tenants", "the tenant directory: assign, where, list")
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
    p = cmds.command("migrate-directory",
                     "move tenants from one node each into hashed buckets (idempotent, resumable)",
                     cmd_tenants_migrate, under="tenants", parents=[common], noun="action")
    p.add_argument("--buckets", type=int, default=None, metavar="N",
                   help="bucket count when the bucket layout is created (default 1024)")
    p.add_argument("--chunk", type=int, default=5000, metavar="N",
                   help="old nodes read and deleted per round (default 5000)")
