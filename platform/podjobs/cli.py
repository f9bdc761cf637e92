"""The `podjobs` program (`python -m podjobs.cli` is the same): one argparse parser built
from the command modules of `podjobs.surface`, then the chosen command.

1. The one registration point: `COMMANDS` lists the command modules (of
   `podjobs.surface`) in the order `podjobs --help` shows them; each has
   `register(cmds: surface.options.Commands)`, which adds its commands (or a group of
   them) and their `func(args) -> exit code`. A new command group is a new
   `surface/cmd_<group>.py`, a line in `COMMANDS` and its names in `OWNERS`.
2. Imports only what the chosen command needs: `OWNERS` maps each top-level command name
   to the module(s) that register it, so `podjobs worker ...` builds (and imports) the
   worker's parser alone; `podjobs --help`, no command or an unknown one build them all
   (tests/test_layers_pure.py checks `OWNERS` against the full parser).
3. Runs the chosen command; a `podjobs.errors.PodjobsError` is printed as
   `podjobs: <message>` with exit code 2 instead of a traceback.

Command modules import at module level only what building the parser needs; Redis,
kazoo, Alembic, SQLAlchemy, FastAPI and the worker load inside the commands that use
them (bench/startup.py measures it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from podjobs.errors import PodjobsError
from podjobs.surface.options import Commands

COMMANDS = ("cmd_dev", "cmd_queues", "cmd_worker", "cmd_iterations", "cmd_pods", "cmd_tenants",
            "cmd_moves", "cmd_scheduler", "cmd_migrations", "cmd_api")
#: top-level command name -> the command modules that register it (cmd_moves joins tenants)
OWNERS: dict[str, tuple[str, ...]] = {
    "dev": ("cmd_dev",),
    **{name: ("cmd_queues",) for name in ("queues", "workers", "stats", "dead", "scheduled",
                                           "retries", "job")},
    "worker": ("cmd_worker",),
    "iterations": ("cmd_iterations",),
    "pods": ("cmd_pods",),
    "fleet": ("cmd_pods",),
    "tenants": ("cmd_tenants", "cmd_moves"),
    "scheduler": ("cmd_scheduler",),
    "migrations": ("cmd_migrations",),
    "api": ("cmd_api",),
}


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"podjobs.surface.{name}")


def needed_modules(argv: Sequence[str] | None) -> tuple[str, ...]:
    """The command modules `argv` needs: the owners of its first word when it names a
    command, else all of them (help, no command, an option first, a typo)."""
    if argv and argv[0] in OWNERS:
        return OWNERS[argv[0]]
    return COMMANDS


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv` (see `needed_modules`); without argv, every command's."""
    parser = argparse.ArgumentParser(
        prog="podjobs",
        description="podjobs: a sharded, pod-aware background-job platform.",
    )
    cmds = Commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    for name in needed_modules(argv):
        command_module(name).register(cmds)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
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
