"""`podjobs pods|tenants|fleet`: the topology in ZooKeeper from the command line.

    podjobs pods list
    podjobs pods add NAME --redis URL --shard URL [--replace]
    podjobs pods set-state NAME active|draining
    podjobs tenants assign TENANT POD
    podjobs tenants assign --file CSV        (lines "tenant,pod"; "-" reads stdin)
    podjobs tenants where TENANT
    podjobs tenants list [--pod POD]
    podjobs fleet [--pod POD]

1. Every command takes `--json` and `--zk HOST:PORT[,HOST:PORT...][/root]`;
   without `--zk`: `$PODJOBS_ZK`, else the "zookeeper" field of the topology
   file (`$PODJOBS_TOPOLOGY` or var/topology.json, written by `podjobs dev up`)
   with the root /podjobs (`resolve_zk_spec`).
2. `register(subparsers)` adds the three groups and returns their subparsers
   by name, so other modules can add commands to a group; `podjobs tenants
   move` is added that way, not here:
       groups = podscli.register(sub); movecli.register(groups["tenants"])
3. Each command is a function `cmd_*(args) -> int` (exit code), callable
   directly with an `argparse.Namespace`; errors are `PodjobsError`s, which the
   main CLI prints as one line.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from podjobs.errors import ConfigurationError
from podjobs.table import render

from .registration import fleet
from .topology import Pod, PodState, TopologyStore, register_topology, validate_name
from .zk import DEFAULT_ROOT, ENV_ZK, ZK, parse_zk_spec

if TYPE_CHECKING:
    from podjobs.infra.topology import Topology

ENV_TOPOLOGY = "PODJOBS_TOPOLOGY"
DEFAULT_TOPOLOGY = os.path.join("var", "topology.json")
# Seconds a command waits for ZooKeeper before giving up with a clear error.
CONNECT_TIMEOUT = 5.0


# -- connection ---------------------------------------------------------------------


def resolve_zk_spec(flag: str | None = None) -> str:
    """ "hosts[/root]" from --zk, `$PODJOBS_ZK`, or the topology file (root /podjobs)."""
    if flag:
        return flag
    env = os.environ.get(ENV_ZK)
    if env:
        return env
    path = os.environ.get(ENV_TOPOLOGY) or DEFAULT_TOPOLOGY
    if os.path.exists(path):
        from podjobs.infra.topology import Topology

        zookeeper: str = Topology.load(path).zookeeper
        return zookeeper.rstrip("/") + DEFAULT_ROOT
    raise ConfigurationError(
        f"which ZooKeeper? pass --zk HOST:PORT[/root], set {ENV_ZK}, or start a local "
        f"cluster with 'podjobs dev up' (its topology file {path} does not exist)"
    )


@contextmanager
def connect(args: argparse.Namespace) -> Iterator[ZK]:
    """A started `ZK` for the command's --zk (see `resolve_zk_spec`), stopped afterwards."""
    hosts, root = parse_zk_spec(resolve_zk_spec(getattr(args, "zk", None)))
    zk = ZK(hosts, root=root or DEFAULT_ROOT).start(timeout=CONNECT_TIMEOUT)
    try:
        yield zk
    finally:
        zk.stop()


def pod_redis_url(args: argparse.Namespace) -> str:
    """The Redis URL of pod `args.pod` in the topology (`--pod NAME` of the core commands)."""
    with connect(args) as zk:
        return TopologyStore(zk).pod(args.pod).redis_url


def publish_topology(topology: Topology) -> str:
    """Put the pods of a local cluster (`podjobs dev up`) into its ZooKeeper; what to print."""
    with ZK(topology.zookeeper, DEFAULT_ROOT).start(timeout=10) as zk:
        names = register_topology(zk, topology)
    return (f"registered pods {', '.join(names)} in ZooKeeper at {topology.zookeeper}{DEFAULT_ROOT} "
            f"(PODJOBS_ZK={topology.zookeeper}{DEFAULT_ROOT})")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


# -- pods ---------------------------------------------------------------------------


def cmd_pods_list(args: argparse.Namespace) -> int:
    with connect(args) as zk:
        pods = TopologyStore(zk).pods()
    if args.json:
        _print_json([p.to_json() for p in pods.values()])
    elif not pods:
        print("no pods (add one with 'podjobs pods add NAME --redis URL --shard URL')")
    else:
        rows = [[p.name, p.state.value, p.redis_url, p.shard_url] for p in pods.values()]
        print(render(["pod", "state", "redis", "shard"], rows))
    return 0


def cmd_pods_add(args: argparse.Namespace) -> int:
    pod = Pod(args.name, args.redis, args.shard)
    with connect(args) as zk:
        store = TopologyStore(zk)
        existed = zk.exists(zk.path("pods", validate_name("pod", args.name)))
        changed = store.add_pod(pod, replace=args.replace)
        now = store.pod(args.name)
    if args.json:
        _print_json({"pod": now.to_json(), "changed": changed})
    elif not changed:
        print(f"pod {now.name} already exists with these URLs (unchanged, {now.state.value})")
    else:
        print(f"{'updated' if existed else 'added'} pod {now.name} ({now.state.value})")
    return 0


def cmd_pods_set_state(args: argparse.Namespace) -> int:
    with connect(args) as zk:
        pod = TopologyStore(zk).set_pod_state(args.name, args.state)
    if args.json:
        _print_json(pod.to_json())
    else:
        print(f"pod {pod.name} is {pod.state.value}")
    return 0


# -- tenants ------------------------------------------------------------------------


def read_assignments(lines: Iterable[str], source: str = "CSV") -> dict[str, str]:
    """tenant -> pod from "tenant,pod" lines (a "tenant,pod" header, blank lines and
    #-comments are skipped); `ConfigurationError` naming the line if one is wrong."""
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
    if args.file:
        if args.tenant or args.pod:
            raise ConfigurationError("give either TENANT POD or --file CSV, not both")
        assignments = _load_csv(args.file)
        started = time.monotonic()
        with connect(args) as zk:
            summary = TopologyStore(zk).assign_many(assignments)
        took = time.monotonic() - started
        if args.json:
            _print_json({**summary.to_dict(), "seconds": round(took, 3)})
        else:
            print(
                f"assigned {len(summary.assigned)} tenant(s), {len(summary.unchanged)} "
                f"already on their pod, in {took:.2f}s"
            )
        return 0
    if not (args.tenant and args.pod):
        raise ConfigurationError("tenants assign needs TENANT POD (or --file CSV)")
    with connect(args) as zk:
        store = TopologyStore(zk)
        before = store.tenant(args.tenant)
        entry = store.assign(args.tenant, args.pod)
    if args.json:
        _print_json({**entry.to_dict(), "changed": before is None})
    elif before is None:
        print(f"assigned {entry.tenant} to {entry.pod}")
    else:
        print(f"{entry.tenant} is already on {entry.pod} (unchanged)")
    return 0


def cmd_tenants_where(args: argparse.Namespace) -> int:
    with connect(args) as zk:
        entry = TopologyStore(zk).where(args.tenant)
    if args.json:
        _print_json(entry.to_dict())
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
    with connect(args) as zk:
        entries = TopologyStore(zk).tenants(pod=args.pod)
    if args.json:
        _print_json([e.to_dict() for e in entries])
    elif not entries:
        where = f" on pod {args.pod}" if args.pod else ""
        print(f"no tenants{where} (assign one with 'podjobs tenants assign TENANT POD')")
    else:
        print(
            render(["tenant", "pod", "state"], [[e.tenant, e.pod, e.state.value] for e in entries])
        )
    return 0


# -- fleet --------------------------------------------------------------------------


def cmd_fleet(args: argparse.Namespace) -> int:
    with connect(args) as zk:
        workers = fleet(zk)
    if args.pod:
        workers = {p: w for p, w in workers.items() if p == args.pod}
    if args.json:
        _print_json(workers)
        return 0
    if not workers:
        print("no live workers" + (f" on pod {args.pod}" if args.pod else ""))
        return 0
    now = time.time()
    rows = []
    for pod, items in workers.items():
        for w in items:
            queues = w.get("queues")
            started = w.get("started")
            up = f"{now - float(started):.0f}s" if isinstance(started, int | float) else ""
            rows.append(
                [
                    pod,
                    w.get("worker_id"),
                    w.get("host"),
                    w.get("pid"),
                    ",".join(map(str, queues)) if isinstance(queues, list) else queues,
                    w.get("concurrency"),
                    up,
                ]
            )
    print(render(["pod", "worker", "host", "pid", "queues", "concurrency", "up"], rows))
    return 0


# -- parser -------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--zk",
        metavar="HOSTS[/ROOT]",
        help=f"ZooKeeper, e.g. 127.0.0.1:2181/podjobs (default ${ENV_ZK}, else the "
        f"topology file ${ENV_TOPOLOGY} or {DEFAULT_TOPOLOGY}, root {DEFAULT_ROOT})",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def register(subparsers: Any) -> dict[str, Any]:
    """Add `pods`, `tenants` and `fleet`; returns {"pods": ..., "tenants": ...}, the
    groups' subparsers, for commands defined elsewhere (`tenants move`)."""
    common = _common()

    def group(name: str, help_: str) -> Any:
        p: argparse.ArgumentParser = subparsers.add_parser(name, help=help_, description=help_)

        def usage(_args: argparse.Namespace) -> int:
            p.print_help(sys.stderr)
            return 2

        p.set_defaults(func=usage)
        return p.add_subparsers(dest=f"{name}_command", metavar="COMMAND")

    def command(sub: Any, name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, help=help_, description=help_, parents=[common]
        )
        p.set_defaults(func=func)
        return p

    pods = group("pods", "the pods in ZooKeeper: list, add, drain")
    command(pods, "list", "list pods with their state, Redis and shard", cmd_pods_list)
    p = command(pods, "add", "add a pod (idempotent)", cmd_pods_add)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--redis", required=True, metavar="URL", help="the pod's Redis URL")
    p.add_argument("--shard", required=True, metavar="URL", help="the pod's database shard URL")
    p.add_argument("--replace", action="store_true", help="change the URLs of an existing pod")
    p = command(
        pods,
        "set-state",
        "mark a pod active or draining (takes no new tenants)",
        cmd_pods_set_state,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("state", choices=[s.value for s in PodState])

    tenants = group("tenants", "the tenant directory: assign, where, list")
    p = command(tenants, "assign", "put new tenants on a pod", cmd_tenants_assign)
    p.add_argument("tenant", nargs="?", metavar="TENANT")
    p.add_argument("pod", nargs="?", metavar="POD")
    p.add_argument(
        "--file", metavar="CSV", help="'tenant,pod' lines to assign in bulk ('-': stdin)"
    )
    p = command(tenants, "where", "the pod a tenant lives on", cmd_tenants_where)
    p.add_argument("tenant", metavar="TENANT")
    p = command(tenants, "list", "tenants and their pods", cmd_tenants_list)
    p.add_argument("--pod", metavar="POD", help="only the tenants of this pod")

    p = subparsers.add_parser(
        "fleet", help="live workers per pod (from ZooKeeper)", description="Live workers per pod.",
        parents=[common],
    )  # fmt: skip
    p.add_argument("--pod", metavar="POD", help="only this pod's workers")
    p.set_defaults(func=cmd_fleet)
    return {"pods": pods, "tenants": tenants}
