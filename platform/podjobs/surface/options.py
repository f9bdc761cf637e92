"""What the command modules share: the registration point and the common options.

1. `Commands`: the one way a command module adds its commands. `podjobs.cli` makes one
   around the top-level subparsers and hands it to every module's `register(cmds)`;
   `cmds.group(name, ...)` adds a command group (`podjobs pods ...`) and remembers it,
   so a module can add a command to another module's group (`cmds.group_of("tenants")`,
   how `podjobs tenants move` joins `tenants`); `cmds.command(...)` adds one command.
2. Which Redis (`add_target_args`, `resolve_redis`): `--redis URL`, or `--pod NAME` with
   the topology in ZooKeeper, or `$PODJOBS_REDIS_URL`.
3. Which ZooKeeper (`zk_options`, `resolve_zk_spec`, `connect`): `--zk`, else
   `$PODJOBS_ZK`, else the topology file of `podjobs dev up` (`$PODJOBS_TOPOLOGY` or
   var/topology.json) with the root /podjobs.
4. `import_apps` (`--app MODULE`), `print_json`.

Nothing here imports kazoo, Redis or SQLAlchemy at module level: `podjobs --help` builds
every parser and must stay lean (bench/startup.py).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from podjobs.errors import ConfigurationError

if TYPE_CHECKING:
    from podjobs.pods.zk import ZK

Func = Callable[[argparse.Namespace], int]

ENV_ZK = "PODJOBS_ZK"  # = podjobs.pods.zk.ENV_ZK (not imported: it loads kazoo)
DEFAULT_ROOT = "/podjobs"  # = podjobs.pods.zk.DEFAULT_ROOT
ENV_TOPOLOGY = "PODJOBS_TOPOLOGY"
DEFAULT_TOPOLOGY = os.path.join("var", "topology.json")
# Seconds a command waits for ZooKeeper before giving up with a clear error.
CONNECT_TIMEOUT = 5.0


# -- the registration point ---------------------------------------------------------


class Commands:
    """The `podjobs` parser's subcommands, as command modules add to them."""

    def __init__(self, subparsers: Any) -> None:
        self.top = subparsers
        self._groups: dict[str, Any] = {}

    def command(self, name: str, help_: str, func: Func, *, under: str | None = None,
                parents: list[argparse.ArgumentParser] | None = None, noun: str | None = None,
                **kwargs: Any) -> argparse.ArgumentParser:
        """`podjobs NAME` (or `podjobs UNDER NAME`) running `func(args) -> exit code`;
        `description` defaults to `help_`. `noun`: what its `--json` prints (a schema of
        `surface.schema.NOUNS`); None only for the long-running servers (worker, scheduler,
        api), which log instead."""
        sub = self._groups[under] if under else self.top
        kwargs.setdefault("description", help_)
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_, parents=parents or [],
                                                     **kwargs)
        p.set_defaults(func=func, noun=noun)
        if noun is not None and not any("--json" in a.option_strings for a in p._actions):
            p.add_argument("--json", action="store_true",
                           help=f"print JSON ({noun} schema, README 'Command-line contract')")
        return p

    def group(self, name: str, help_: str, description: str | None = None) -> argparse.ArgumentParser:
        """`podjobs NAME COMMAND ...`: a group whose commands are added with `under=NAME`;
        `podjobs NAME` alone prints the group's help on stderr and exits 2."""
        p: argparse.ArgumentParser = self.top.add_parser(name, help=help_,
                                                         description=description or help_)

        def usage(_args: argparse.Namespace) -> int:
            p.print_help(sys.stderr)
            return 2

        p.set_defaults(func=usage)
        self._groups[name] = p.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
        return p

    def subgroup(self, parser: argparse.ArgumentParser, name: str) -> None:
        """Let `parser` (a command that also runs alone, like `podjobs scheduler`) take
        commands with `under=NAME`."""
        self._groups[name] = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")


# -- output and --app ---------------------------------------------------------------


#: True while `--watch` runs with `--json`: one document a line (JSON Lines)
_json_lines = False


def print_json(obj: Any, *, sort_keys: bool = False) -> None:
    print(json.dumps(obj, indent=None if _json_lines else 2, sort_keys=sort_keys, default=str))


def add_watch(p: argparse.ArgumentParser) -> None:
    """`--watch S` (refresh every S seconds until Ctrl-C) and `--rounds N`."""
    p.add_argument("--watch", type=float, metavar="S",
                   help="refresh every S seconds until Ctrl-C (with --json: one document a line)")
    p.add_argument("--rounds", type=int, metavar="N", help="with --watch: stop after N refreshes")


def watching(args: argparse.Namespace, once: Callable[[], int]) -> int:
    """Run `once()`, or with `--watch` again every S seconds (the screen cleared on a
    terminal) until Ctrl-C or `--rounds`; the exit code of the last round."""
    global _json_lines
    every = getattr(args, "watch", None)
    if not every:
        return once()
    import time

    as_json = bool(getattr(args, "json", False))
    _json_lines = as_json
    code, n = 0, 0
    try:
        while True:
            if not as_json:
                if sys.stdout.isatty():
                    print("\033[H\033[2J", end="")
                print(f"every {every:g}s, {time.strftime('%H:%M:%S')} (Ctrl-C to stop)")
            code = once()
            sys.stdout.flush()
            n += 1
            if args.rounds and n >= args.rounds:
                return code
            time.sleep(every)
    except KeyboardInterrupt:
        return code
    finally:
        _json_lines = False


def action_result(args: argparse.Namespace, action: str, changed: list[str], message: str,
                  **extra: Any) -> int:
    """Print what a command changed: `message` for people, or with `--json` the `action`
    noun (`action`, `count`, `changed`: the ids or names it changed, `message`)."""
    if getattr(args, "json", False):
        print_json({"action": action, "count": len(changed), "changed": changed,
                    "message": message, **extra})
    else:
        print(message)
    return 0


def confirm_all(args: argparse.Namespace, what: str) -> None:
    """`--all` on a delete needs `--yes`, or a 'yes' typed at a terminal."""
    if getattr(args, "yes", False):
        return
    if sys.stdin.isatty() and sys.stdout.isatty():
        answer = input(f"{what}? type 'yes' to go on: ")
        if answer.strip().lower() == "yes":
            return
        raise ConfigurationError(f"{what}: not confirmed; nothing was changed")
    raise ConfigurationError(f"{what}: pass --yes to confirm (no terminal to ask); nothing was "
                             f"changed")


def app_modules(flags: list[str] | None) -> list[str]:
    """The modules of repeated or comma-separated `--app` flags."""
    return [m for a in flags or [] for m in a.split(",") if m]


def import_apps(modules: list[str], hint: str = "") -> None:
    """Import the `--app` modules from the current directory too; `ConfigurationError`
    naming the module (and `hint`) when one cannot be imported."""
    sys.path.insert(0, os.getcwd())
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError as exc:
            raise ConfigurationError(f"--app {m}: cannot import it ({exc}){hint}") from exc


APP_HINT = "; run from the directory that holds it or put it on PYTHONPATH"


# -- which Redis ----------------------------------------------------------------------


def add_log_args(p: argparse.ArgumentParser, job_log: bool = False) -> None:
    """--log-level and --log-format (text or json); --job-log for a process that runs jobs."""
    p.add_argument("--log-level", default="info", help="debug, info (default), warning, error")
    p.add_argument("--log-format", default="text", choices=("text", "json"),
                   help="text (default) or json: one JSON object a line (podjobs.logs)")
    if job_log:
        p.add_argument("--job-log", default="on", choices=("on", "off"),
                       help="one INFO line per job start and end (default on)")


def setup_logs(args: argparse.Namespace) -> None:
    """Configure logging from add_log_args' flags (podjobs.logs)."""
    from podjobs import logs

    logs.setup(args.log_level, args.log_format, getattr(args, "job_log", "on") == "on")


def add_metrics_args(p: argparse.ArgumentParser) -> None:
    """--metrics-port and --metrics-host: the process' /metrics and /healthz (podjobs.exposition)."""
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus /metrics and /healthz on this port (0: any free port)")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address the metrics port binds (default 127.0.0.1; 0.0.0.0 in a container)")


def add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis", metavar="URL", help="the pod's Redis URL (default $PODJOBS_REDIS_URL)")
    p.add_argument("--pod", metavar="NAME", help="a pod of the topology in ZooKeeper instead of --redis")
    p.add_argument("--zk", metavar="HOSTS[/ROOT]",
                   help="ZooKeeper for --pod (default $PODJOBS_ZK, else the topology file's)")


def pod_redis_url(args: argparse.Namespace) -> str:
    """The Redis URL of pod `args.pod` in the topology in ZooKeeper."""
    from podjobs.pods.topology import TopologyStore

    with connect(args) as zk:
        url: str = TopologyStore(zk).pod(args.pod).redis_url
        return url


def queue_url(pod: Any) -> str:
    """Where a pod's queue is: its Redis URL, or its shard's URL when `pod.backend` is "sql"
    (the views of cmd_queues open a SqlInspector on it)."""
    return str(pod.shard_url if getattr(pod, "backend", "redis") == "sql" else pod.redis_url)


def pod_targets(args: argparse.Namespace) -> list[tuple[str | None, str]]:
    """[(pod name, queue URL: Redis, or the shard of a SQL pod)] a fleet-wide view reads: `--redis URL` (pod unknown unless
    `--pod` names it), `--pod NAME`, `$PODJOBS_REDIS_URL`, else every pod of the topology in
    ZooKeeper (`--zk`, `$PODJOBS_ZK`, the topology file)."""
    if getattr(args, "pod", None) and not getattr(args, "redis", None):
        from podjobs.pods.topology import TopologyStore

        with connect(args) as zk:
            return [(args.pod, queue_url(TopologyStore(zk).pod(args.pod)))]
    if getattr(args, "redis", None) or os.environ.get("PODJOBS_REDIS_URL"):
        url, pod = resolve_redis(args)
        return [(pod, url)]
    try:
        spec = resolve_zk_spec(getattr(args, "zk", None))
    except ConfigurationError:
        raise ConfigurationError(
            "which pods? pass --pod NAME or --redis URL, or --zk HOSTS[/root] (or set PODJOBS_ZK, "
            "or start a local cluster with 'podjobs dev up') for every pod") from None
    from podjobs.pods.topology import TopologyStore

    zk = open_zk(spec)
    try:
        return [(name, queue_url(pod)) for name, pod in sorted(TopologyStore(zk).pods().items())]
    finally:
        zk.stop()


def resolve_redis(args: argparse.Namespace) -> tuple[str, str | None]:
    """(redis url, pod name) from --redis, --pod + the topology in ZooKeeper, or the environment."""
    if getattr(args, "redis", None):
        return args.redis, getattr(args, "pod", None)
    if getattr(args, "pod", None):
        return pod_redis_url(args), args.pod
    url = os.environ.get("PODJOBS_REDIS_URL")
    if url:
        return url, None
    raise ConfigurationError("which Redis? pass --redis URL or --pod NAME, or set PODJOBS_REDIS_URL")


# -- which ZooKeeper ------------------------------------------------------------------


def zk_options() -> argparse.ArgumentParser:
    """A parent parser with `--zk` and `--json` (the ZooKeeper commands)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--zk",
        metavar="HOSTS[/ROOT]",
        help=f"ZooKeeper, e.g. 127.0.0.1:2181/podjobs (default ${ENV_ZK}, else the "
        f"topology file ${ENV_TOPOLOGY} or {DEFAULT_TOPOLOGY}, root {DEFAULT_ROOT})",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def resolve_zk_spec(flag: str | None = None) -> str:
    """ "hosts[/root]" from --zk, `$PODJOBS_ZK`, or the topology file (root /podjobs)."""
    if flag:
        return flag
    env = os.environ.get(ENV_ZK)
    if env:
        return env
    path = os.environ.get(ENV_TOPOLOGY) or DEFAULT_TOPOLOGY
    if os.path.exists(path):
        from podjobs.infra.topofile import Topology

        zookeeper: str = Topology.load(path).zookeeper
        return zookeeper.rstrip("/") + DEFAULT_ROOT
    raise ConfigurationError(
        f"which ZooKeeper? pass --zk HOST:PORT[/root], set {ENV_ZK}, or start a local "
        f"cluster with 'podjobs dev up' (its topology file {path} does not exist)"
    )


def open_zk(spec: str, connect_timeout: float = CONNECT_TIMEOUT,
            session_timeout: float | None = None) -> ZK:
    """A started `ZK` for a "hosts[/root]" spec (root /podjobs when it names none)."""
    from podjobs.pods.zk import ZK, parse_zk_spec

    hosts, root = parse_zk_spec(spec)
    kwargs = {} if session_timeout is None else {"timeout": session_timeout}
    zk: ZK = ZK(hosts, root=root or DEFAULT_ROOT, **kwargs).start(timeout=connect_timeout)
    return zk


def stop_quietly(zk: ZK, timeout: float = 2.0) -> None:
    """Stop `zk` without waiting more than `timeout` seconds (a frozen server can hold
    kazoo's close; the process is about to exit anyway)."""
    import threading

    t = threading.Thread(target=zk.stop, name="podjobs-zk-stop", daemon=True)
    t.start()
    t.join(timeout)


@contextmanager
def connect(args: argparse.Namespace) -> Iterator[ZK]:
    """A started `ZK` for the command's --zk (see `resolve_zk_spec`), stopped afterwards."""
    zk = open_zk(resolve_zk_spec(getattr(args, "zk", None)))
    try:
        yield zk
    finally:
        zk.stop()
