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
3. Runs the chosen command; a `podjobs.errors.PodjobsError` is printed as one line,
   `podjobs: <message>`, instead of a traceback, with its `exit_code`; a server that
   does not answer (kazoo's, redis-py's or SQLAlchemy's connection errors) exits 4; output
   closed early (`| head`) ends quietly. Exit codes: `podjobs.exits` (README "Exit codes").

Command modules import at module level only what building the parser needs; Redis,
kazoo, Alembic, SQLAlchemy, FastAPI and the worker load inside the commands that use
them (bench/startup.py measures it).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import shutil
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from podjobs.errors import PodjobsError
from podjobs.surface.options import Commands

COMMANDS = ("cmd_dev", "cmd_queues", "cmd_worker", "cmd_iterations", "cmd_pods", "cmd_tenants",
            "cmd_moves", "cmd_scheduler", "cmd_migrations", "cmd_api", "cmd_exporter",
            "cmd_web", "cmd_relay")
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
    "exporter": ("cmd_exporter",),
    "web": ("cmd_web",),
    "relay": ("cmd_relay",),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("podjobs")
    except PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """`--version`: the installed version, looked up only when asked (importlib.metadata
    costs every other command ~20 ms of start-up)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str = "show the version and exit") -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser.exit(message=f"podjobs {_version()}\n")


@functools.cache
def _columns() -> int:
    return shutil.get_terminal_size().columns - 2  # what argparse's formatter computes


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter with the terminal's width looked up once per process:
    argparse makes a formatter for every add_argument (to check its metavar), and each one
    asked the terminal again (~1.1M instructions of a worker's start, for its 25 options)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() if width is None else width)


class _Parser(argparse.ArgumentParser):
    """The top parser's class, which every subcommand's parser takes (argparse makes those
    with the class of the parser they are added to): `_Formatter` by default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


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
    parser = _Parser(
        prog="podjobs",
        description="podjobs: a sharded, pod-aware background-job platform.",
        epilog="exit codes: 0 done, 1 failed or halted, 2 usage, 3 timeout, 4 a server "
               "unreachable",
    )
    parser.add_argument("--version", action=_VersionAction)
    cmds = Commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    for name in needed_modules(argv):
        command_module(name).register(cmds)
    return parser


def unreachable(exc: BaseException) -> str | None:
    """A one-line message when `exc` says a server did not answer, else None. Matched by the
    exception's module and name: importing kazoo, redis or SQLAlchemy here would load them
    for every command."""
    for cls in type(exc).__mro__:
        mod, name = cls.__module__, cls.__name__
        if mod.startswith("kazoo") and name in ("ConnectionLoss", "SessionExpiredError",
                                                "KazooTimeoutError", "ConnectionClosedError",
                                                "OperationTimeoutError"):
            return f"ZooKeeper unreachable ({name}: {exc}); try again once it answers"
        if mod.startswith("redis") and name in ("ConnectionError", "TimeoutError"):
            return f"Redis unreachable ({name}: {exc}); check the pod's Redis"
        if mod.startswith("sqlalchemy") and name == "OperationalError":
            from podjobs.table import one_line

            return f"a shard database did not answer ({one_line(str(exc))[:300]})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line as given (`worker --processes` runs it again)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        from podjobs.exits import Exit  # here and below: loaded only when needed

        return int(Exit.USAGE)
    try:
        rc = func(args)
        sys.stdout.flush()
    except PodjobsError as exc:
        from podjobs.table import one_line, paint

        print(f"{paint('podjobs:', 'red', sys.stderr)} {one_line(str(exc))}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`podjobs dead list | head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        msg = unreachable(exc)
        if msg is None:
            raise
        from podjobs.exits import Exit
        from podjobs.table import paint

        print(f"{paint('podjobs:', 'red', sys.stderr)} {msg}", file=sys.stderr)
        return int(Exit.UNREACHABLE)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
