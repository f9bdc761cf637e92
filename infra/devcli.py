"""`podjobs dev ...`: run a local cluster for development and demos.

1. `podjobs dev up --pods N [--db sqlite|mysql] [--mysql-url URL] [--dir var/]
   [--base-port P]` starts (or keeps) ZooKeeper, a Redis per pod and the shards,
   prints the topology as a table and the path of topology.json.
2. `podjobs dev status [--dir var/] [--json]` lists the recorded servers;
   exit code 0 if all run, 1 if any is down or nothing is recorded.
3. `podjobs dev down [--dir var/] [--purge]` stops exactly those servers.

`register(subparsers, publish=...)` adds the `dev` group to the `podjobs` parser; every
command sets `func(args) -> int`. `publish(topology) -> message` registers the pods of
`up` in ZooKeeper: the command line passes podjobs.pods.cli.publish_topology (infra is
a tool layer below pods and imports none of it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .cluster import DB_KINDS, Cluster
from .topology import Topology

DEFAULT_DIR = "var"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def format_topology(topology: Topology) -> str:
    rows = [[p.name, p.redis_url, p.shard_url] for p in topology.pods]
    table = format_table(["pod", "redis", "shard"], rows)
    return f"{table}\n\nzookeeper  {topology.zookeeper}"


def _cmd_up(args: argparse.Namespace) -> int:
    cluster = Cluster(args.dir)
    topology = cluster.up(
        args.pods, db=args.db, mysql_url=args.mysql_url, base_port=args.base_port,
        timeout=args.timeout,
    )  # fmt: skip
    print(format_topology(topology))
    print(f"\ntopology: {cluster.topology_file}")
    if args.publish is not None:  # the pods layer registers the pods in ZooKeeper
        print(args.publish(topology))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    cluster = Cluster(args.dir)
    statuses = cluster.status()
    if args.json:
        out: dict[str, Any] = {
            "dir": str(cluster.dir),
            "topology": str(cluster.topology_file) if cluster.topology_file.exists() else None,
            "servers": [s.to_dict() for s in statuses],
        }
        print(json.dumps(out, indent=2))
    elif not statuses:
        print(f"no cluster recorded in {cluster.dir} (start one with 'podjobs dev up --pods N')")
    else:
        rows = [
            [s.kind, s.name, str(s.pid or "-"), str(s.port),
             "running" if s.running else "stopped", s.log_file]
            for s in statuses
        ]  # fmt: skip
        print(format_table(["kind", "name", "pid", "port", "state", "log"], rows))
    return 0 if statuses and all(s.running for s in statuses) else 1


def _cmd_down(args: argparse.Namespace) -> int:
    cluster = Cluster(args.dir)
    if cluster.load_state() is None:
        print(f"no cluster recorded in {cluster.dir}; nothing to stop")
        return 0
    stopped = cluster.down(purge=args.purge)
    for s in stopped:
        print(f"stopped {s.kind} {s.name} (pid {s.pid}, port {s.port})")
    if not stopped:
        print("no recorded server was running")
    if args.purge:
        print(f"removed the data under {cluster.dir}")
    return 0


def register(subparsers: Any, publish: Callable[[Topology], str] | None = None) -> None:
    """Add `dev up|status|down` to the podjobs parser's subparsers; `up` ends with
    `publish(topology)` (printed) when given."""
    dev = subparsers.add_parser(
        "dev",
        help="run a local cluster (ZooKeeper, Redis per pod, shards)",
        description="Start, inspect and stop a local podjobs cluster.",
    )
    dev.set_defaults(func=lambda _args: (dev.print_help(sys.stderr), 2)[1])
    sub = dev.add_subparsers(dest="dev_command", metavar="COMMAND")

    def add_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dir", default=DEFAULT_DIR,
            help=f"cluster directory: state, logs, data (default: {DEFAULT_DIR}/)",
        )  # fmt: skip

    up = sub.add_parser("up", help="start the cluster (keeps servers already running)")
    up.add_argument("--pods", type=int, required=True, metavar="N", help="number of pods")
    up.add_argument(
        "--db", choices=DB_KINDS, default=None,
        help="shard kind: sqlite files (default) or MariaDB databases",
    )  # fmt: skip
    up.add_argument(
        "--mysql-url", default=None, metavar="URL",
        help="use this existing MySQL server for the shards instead of starting one "
        "(e.g. mysql+pymysql://root@127.0.0.1:3306/podjobs: databases podjobs_p1...)",
    )  # fmt: skip
    up.add_argument(
        "--base-port", type=int, default=None, metavar="P",
        help="ports P (ZooKeeper), P+1 (MariaDB), P+1+i (Redis of pod i); default: free ports",
    )  # fmt: skip
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for servers")
    add_dir(up)
    up.set_defaults(func=_cmd_up, publish=publish)

    status = sub.add_parser("status", help="show the recorded servers and whether they run")
    add_dir(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_cmd_status)

    down = sub.add_parser("down", help="stop the servers this cluster started")
    add_dir(down)
    down.add_argument("--purge", action="store_true", help="also delete their data (shards, logs)")
    down.set_defaults(func=_cmd_down)
