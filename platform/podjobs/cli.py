"""The `podjobs` command line: the composition root of the commands.

1. Builds one argparse parser; each command group lives in its own module and
   exposes `register(subparsers)`, which adds its parsers and sets `func`.
2. Wires the layers: the core's `--pod NAME` (podjobs.opscli.use_pods) and `dev up`'s
   registration in ZooKeeper (infra's devcli) come from the pods and scheduler packages,
   which the core and infra do not import.
3. Runs the chosen command; a `podjobs.errors.PodjobsError` is printed as
   `podjobs: <message>` with exit code 2 instead of a traceback.

Command modules import at module level only what building the parser needs; Alembic,
SQLAlchemy, FastAPI and the worker load inside the commands that use them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from podjobs import opscli
from podjobs.api import cli as apicli
from podjobs.errors import PodjobsError
from podjobs.infra import devcli
from podjobs.iteration import cli as itercli
from podjobs.pods import cli as podscli
from podjobs.pods import movecli
from podjobs.scheduler import cli as schedcli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="podjobs",
        description="podjobs: a sharded, pod-aware background-job platform.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    devcli.register(sub, publish=podscli.publish_topology)
    opscli.use_pods(podscli.pod_redis_url, schedcli.run_pod_worker)
    opscli.register(sub)
    itercli.register(sub)
    groups = podscli.register(sub)
    schedcli.register(sub)
    movecli.register(groups["tenants"], podscli._common())
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
