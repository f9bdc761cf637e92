"""`podjobs tenants move`: move a tenant to another pod, resume or roll back a move.

    podjobs tenants move TENANT --to POD --app MODULE     (the module registers copy hooks)
    podjobs tenants move TENANT --to POD --jobs-only      (move the jobs, copy no data)
    podjobs tenants move TENANT --resume | --rollback
    podjobs tenants move --status [TENANT] [--json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any

from podjobs.errors import ConfigurationError
from podjobs.table import render

from .cli import connect


def cmd_move(args: argparse.Namespace) -> int:
    sys.path.insert(0, os.getcwd())
    for m in [m for a in (args.app or []) for m in a.split(",") if m]:
        importlib.import_module(m)
    with connect(args) as zk:
        if args.status:
            from .moves import moves_in_progress  # SQLAlchemy: in the command, not for --help

            rows = [e for e in moves_in_progress(zk) if not args.tenant or e.tenant == args.tenant]
            if args.json:
                print(json.dumps([{"tenant": e.tenant, "pod": e.pod, "state": e.state, **(e.move or {})}
                                  for e in rows], indent=2, default=str))
            elif not rows:
                print("no move in progress" + (f" for {args.tenant}" if args.tenant else ""))
            else:
                print(render(["tenant", "from", "to", "step", "state", "error"],
                             [[e.tenant, (e.move or {}).get("from"), (e.move or {}).get("to"),
                               (e.move or {}).get("step"), e.state, (e.move or {}).get("error") or ""]
                              for e in rows]))
            return 0
        if not args.tenant:
            raise ConfigurationError("name the tenant to move (or use --status)")
        from .moves import Mover

        mover = Mover(zk, quiesce_timeout=args.timeout, jobs_only=args.jobs_only, progress=print)
        if args.rollback:
            mover.rollback(args.tenant)
        elif args.resume:
            mover.resume(args.tenant)
        else:
            if not args.to:
                raise ConfigurationError("--to POD is required to start a move")
            mover.move(args.tenant, args.to)
        return 0


def register(tenants: Any, common: argparse.ArgumentParser) -> None:
    p: argparse.ArgumentParser = tenants.add_parser(
        "move", parents=[common], help="move a tenant to another pod (jobs held, none lost)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tenant", nargs="?", metavar="TENANT")
    p.add_argument("--to", metavar="POD", help="the destination pod")
    p.add_argument("--app", action="append", metavar="MODULE",
                   help="module registering @podjobs.pods.moves.copy_hook data copies")
    p.add_argument("--jobs-only", action="store_true", help="move the jobs, copy no data")
    p.add_argument("--resume", action="store_true", help="go on with a move that stopped")
    p.add_argument("--rollback", action="store_true", help="undo a move that has not flipped yet")
    p.add_argument("--status", action="store_true", help="show moves in progress")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for the old pod's workers to finish the tenant's jobs")
    p.set_defaults(func=cmd_move)
