"""The `podjobs` command line.

1. Builds one argparse parser; each command group lives in its own module and
   exposes `register(subparsers)`, which adds its parsers and sets `func`.
2. Runs the chosen command; a `podjobs.errors.PodjobsError` is printed as
   `podjobs: <message>` with exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from podjobs.errors import PodjobsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="podjobs",
        description="podjobs: a sharded, pod-aware background-job platform.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from podjobs.infra import devcli

    devcli.register(sub)
    from podjobs import opscli

    opscli.register(sub)
    from podjobs.iteration import cli as itercli
    itercli.register(sub)
    from podjobs.pods import cli as podscli
    from podjobs.pods import movecli

    groups = podscli.register(sub)
    from podjobs.scheduler import cli as schedcli

    schedcli.register(sub)
    movecli.register(groups["tenants"], podscli._common())
    from podjobs.api import cli as apicli

    apicli.register(sub)
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
