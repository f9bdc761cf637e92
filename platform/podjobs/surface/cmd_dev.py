"""`podjobs dev ...`: run a local cluster for development and demos.

1. `podjobs dev up --pods N [--db sqlite|mysql] [--mysql-url URL] [--dir var/]
   [--base-port P] [--backend redis|sql]` starts (or keeps) ZooKeeper, a Redis per pod
   (none with `--backend sql`: the pods' queues are tables on their shards) and the shards,
   prints the topology as a table and the path of topology.json.
2. `podjobs dev status [--dir var/] [--json]` lists the recorded servers;
   exit code 0 if all run, 1 if any is down or nothing is recorded.
3. `podjobs dev down [--dir var/] [--purge]` stops exactly those servers.

`up` ends by registering the pods in ZooKeeper (`publish_topology`, with the pods
package: the surface sits above both infra and pods, so no hook is needed).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .options import DEFAULT_ROOT, Commands, action_result, print_json

if TYPE_CHECKING:
    from podjobs.infra.topofile import Topology

DEFAULT_DIR = "var"
DB_KINDS = ("sqlite", "mysql")  # podjobs.infra.cluster.DB_KINDS (not imported for --help)
BACKENDS = ("redis", "sql")  # podjobs.infra.cluster.BACKENDS


def publish_topology(topology: Topology) -> str:
    """Put the pods of a local cluster into its ZooKeeper; what to print."""
    from podjobs.pods.topology import register_topology
    from podjobs.pods.zk import ZK

    with ZK(topology.zookeeper, DEFAULT_ROOT).start(timeout=10) as zk:
        names = register_topology(zk, topology)
    return (f"registered pods {', '.join(names)} in ZooKeeper at {topology.zookeeper}{DEFAULT_ROOT} "
            f"(PODJOBS_ZK={topology.zookeeper}{DEFAULT_ROOT})")


def _cmd_up(args: argparse.Namespace) -> int:
    from podjobs.infra.cluster import Cluster
    from podjobs.infra.topofile import format_topology

    cluster = Cluster(args.dir)
    topology = cluster.up(
        args.pods, db=args.db, mysql_url=args.mysql_url, base_port=args.base_port,
        timeout=args.timeout, backend=args.backend,
    )  # fmt: skip
    published = publish_topology(topology)
    if args.json:
        print_json(cluster_doc(cluster))
        return 0
    print(format_topology(topology))
    print(f"\ntopology: {cluster.topology_file}")
    print(published)
    return 0


def cluster_doc(cluster: Any) -> dict[str, Any]:
    """The `cluster` noun: its directory, topology file and servers."""
    return {"dir": str(cluster.dir),
            "topology": str(cluster.topology_file) if cluster.topology_file.exists() else None,
            "servers": [s.to_dict() for s in cluster.status()]}


def _cmd_status(args: argparse.Namespace) -> int:
    from podjobs.infra.cluster import Cluster
    from podjobs.infra.topofile import format_table

    cluster = Cluster(args.dir)
    statuses = cluster.status()
    if args.json:
        print_json(cluster_doc(cluster))
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
    from podjobs.infra.cluster import Cluster

    cluster = Cluster(args.dir)
    if cluster.load_state() is None:
        return action_result(args, "dev down", [],
                             f"no cluster recorded in {cluster.dir}; nothing to stop")
    stopped = cluster.down(purge=args.purge)
    lines = [f"stopped {s.kind} {s.name} (pid {s.pid}, port {s.port})" for s in stopped]
    if not stopped:
        lines.append("no recorded server was running")
    if args.purge:
        lines.append(f"removed the data under {cluster.dir}")
    return action_result(args, "dev down", [f"{s.kind}:{s.name}" for s in stopped],
                         "\n".join(lines))


def register(cmds: Commands) -> None:
    """`dev up|status|down`."""
    cmds.group("dev", "run a local cluster (ZooKeeper, Redis per pod, shards)",
               description="Start, inspect and stop a local podjobs cluster.")

    def command(name: str, help_: str, func: Any, noun: str) -> argparse.ArgumentParser:
        return cmds.command(name, help_, func, under="dev", description=None, noun=noun)

    def add_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dir", default=DEFAULT_DIR,
            help=f"cluster directory: state, logs, data (default: {DEFAULT_DIR}/)",
        )  # fmt: skip

    up = command("up", "start the cluster (keeps servers already running)", _cmd_up, "cluster")
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
    up.add_argument(
        "--backend", choices=BACKENDS, default=None,
        help="where the pods keep their queues: a redis-server each (default) or tables on "
        "their own shard (sql: no Redis is started; SQLite files, or MariaDB with --db mysql)",
    )  # fmt: skip
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for servers")
    add_dir(up)

    status = command("status", "show the recorded servers and whether they run", _cmd_status,
                     "cluster")
    add_dir(status)

    down = command("down", "stop the servers this cluster started", _cmd_down, "action")
    add_dir(down)
    down.add_argument("--purge", action="store_true", help="also delete their data (shards, logs)")
