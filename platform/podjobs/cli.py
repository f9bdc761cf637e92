"""The `podjobs` program (`python -m podjobs.cli` is the same): one argparse parser built
from the command modules of `podjobs.surface`, then the chosen command.

1. The one registration point: `COMMANDS` lists the command modules in the order
   `podjobs --help` shows them; each has `register(cmds: surface.options.Commands)`,
   which adds its commands (or a group of them) and their `func(args) -> exit code`.
   A new command group is a new `surface/cmd_<group>.py` and a line here.
2. Runs the chosen command; a `podjobs.errors.PodjobsError` is printed as
   `podjobs: <message>` with exit code 2 instead of a traceback.

Command modules import at module level only what building the parser needs; Redis,
kazoo, Alembic, SQLAlchemy, FastAPI and the worker load inside the commands that use
them (bench/startup.py measures it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from podjobs.errors import PodjobsError
from podjobs.surface import (
    cmd_api,
    cmd_dev,
    cmd_exporter,
    cmd_iterations,
    cmd_migrations,
    cmd_moves,
    cmd_pods,
    cmd_queues,
    cmd_scheduler,
    cmd_tenants,
    cmd_web,
    cmd_worker,
)
from podjobs.surface.options import Commands

COMMANDS = (cmd_dev, cmd_queues, cmd_worker, cmd_iterations, cmd_pods, cmd_tenants, cmd_moves,
            cmd_scheduler, cmd_migrations, cmd_api, cmd_exporter, cmd_web)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="podjobs",
        description="podjobs: a sharded, pod-aware background-job platform.",
    )
    cmds = Commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    for module in COMMANDS:
        module.register(cmds)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        rc = func(args)
    except PodjobsError as exc:
        print(f"podjobs: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
