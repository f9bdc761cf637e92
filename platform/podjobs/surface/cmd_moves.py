"""`podjobs tenants move`: move a tenant to another pod, resume or roll back a move.

    podjobs tenants move TENANT --to POD --app MODULE     (the module registers copy hooks)
    podjobs tenants move TENANT --to POD --jobs-only      (move the jobs, copy no data)
    podjobs tenants move TENANT --resume | --rollback
    podjobs tenants move --status [TENANT] [--json]
"""

from __future__ import annotations

import argparse
import sys

from podjobs.errors import ConfigurationError
from podjobs.table import bar, paint, render

from .options import (
    Commands,
    action_result,
    app_modules,
    connect,
    import_apps,
    print_json,
    zk_options,
)

# (`tenants move` joins the `tenants` group of cmd_tenants through `Commands`; the
# docstring above is its --help.)


def cmd_move(args: argparse.Namespace) -> int:
    import_apps(app_modules(args.app))
    with connect(args) as zk:
        if args.status:
            from podjobs.pods.moves import (
                moves_in_progress,  # SQLAlchemy: in the command, not for --help
            )

            rows = [e for e in moves_in_progress(zk) if not args.tenant or e.tenant == args.tenant]
            if args.json:
                print_json([{"tenant": e.tenant, "pod": e.pod, "state": e.state, **(e.move or {})}
                             for e in rows])
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
        from podjobs.pods.moves import Mover

        steps: list[str] = []

        def progress(line: str) -> None:
            steps.append(line)
            if not args.json:
                print(line, flush=True)

        def on_step(done: int, total: int, name: str) -> None:
            if not args.json and sys.stdout.isatty():  # a bar for a person, plain lines for a log
                print(paint(f"{bar(done, total)} {name}", "bold", sys.stdout), flush=True)

        mover = Mover(zk, quiesce_timeout=args.timeout, jobs_only=args.jobs_only, progress=progress,
                      on_step=on_step)
        if args.rollback:
            mover.rollback(args.tenant)
            action = "tenants move --rollback"
        elif args.resume:
            mover.resume(args.tenant)
            action = "tenants move --resume"
        else:
            if not args.to:
                raise ConfigurationError("--to POD is required to start a move")
            mover.move(args.tenant, args.to)
            action = "tenants move"
        if args.json:
            action_result(args, action, [args.tenant], f"{action} {args.tenant}: done",
                          steps=steps)
        return 0


def register(cmds: Commands) -> None:
    p = cmds.command("move", "move a tenant to another pod (jobs held, none lost)", cmd_move,
                     under="tenants", parents=[zk_options()], description=__doc__, noun="move",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
