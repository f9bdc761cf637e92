"""`podjobs pods` and `podjobs fleet`: the pods in ZooKeeper, and their live workers.

    podjobs pods list
    podjobs pods add NAME --redis URL --shard URL [--replace]
    podjobs pods set-state NAME active|draining
    podjobs fleet [--pod POD]

Every command takes `--json` and `--zk HOST:PORT[,HOST:PORT...][/root]` (without it:
`$PODJOBS_ZK`, else the topology file of `podjobs dev up`; options.resolve_zk_spec).
Each command is a function `cmd_*(args) -> int` (exit code); errors are `PodjobsError`s,
which `podjobs` prints as one line.
"""

from __future__ import annotations

import argparse
import time

from podjobs.infra.topofile import Pod, PodState
from podjobs.table import render

from .options import Commands, connect, print_json, zk_options

# -- pods ---------------------------------------------------------------------------


def cmd_pods_list(args: argparse.Namespace) -> int:
    from podjobs.pods.topology import TopologyStore

    with connect(args) as zk:
        pods = TopologyStore(zk).pods()
    if args.json:
        print_json([p.to_json() for p in pods.values()], sort_keys=True)
    elif not pods:
        print("no pods (add one with 'podjobs pods add NAME --redis URL --shard URL')")
    else:
        rows = [[p.name, p.state.value, p.redis_url, p.shard_url] for p in pods.values()]
        print(render(["pod", "state", "redis", "shard"], rows))
    return 0


def cmd_pods_add(args: argparse.Namespace) -> int:
    from podjobs.pods.topology import TopologyStore, validate_name

    pod = Pod(args.name, args.redis, args.shard)
    with connect(args) as zk:
        store = TopologyStore(zk)
        existed = zk.exists(zk.path("pods", validate_name("pod", args.name)))
        changed = store.add_pod(pod, replace=args.replace)
        now = store.pod(args.name)
    if args.json:
        print_json({"pod": now.to_json(), "changed": changed}, sort_keys=True)
    elif not changed:
        print(f"pod {now.name} already exists with these URLs (unchanged, {now.state.value})")
    else:
        print(f"{'updated' if existed else 'added'} pod {now.name} ({now.state.value})")
    return 0


def cmd_pods_set_state(args: argparse.Namespace) -> int:
    from podjobs.pods.topology import TopologyStore

    with connect(args) as zk:
        pod = TopologyStore(zk).set_pod_state(args.name, args.state)
    if args.json:
        print_json(pod.to_json(), sort_keys=True)
    else:
        print(f"pod {pod.name} is {pod.state.value}")
    return 0


# -- fleet --------------------------------------------------------------------------


def cmd_fleet(args: argparse.Namespace) -> int:
    from podjobs.pods.registration import fleet

    with connect(args) as zk:
        workers = fleet(zk)
    if args.pod:
        workers = {p: w for p, w in workers.items() if p == args.pod}
    if args.json:
        print_json(workers, sort_keys=True)
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


def register(cmds: Commands) -> None:
    common = zk_options()
    cmds.group("pods", "the pods in ZooKeeper: list, add, drain")
    cmds.command("list", "list pods with their state, Redis and shard", cmd_pods_list,
                 under="pods", parents=[common])
    p = cmds.command("add", "add a pod (idempotent)", cmd_pods_add, under="pods", parents=[common])
    p.add_argument("name", metavar="NAME")
    p.add_argument("--redis", required=True, metavar="URL", help="the pod's Redis URL")
    p.add_argument("--shard", required=True, metavar="URL", help="the pod's database shard URL")
    p.add_argument("--replace", action="store_true", help="change the URLs of an existing pod")
    p = cmds.command("set-state", "mark a pod active or draining (takes no new tenants)",
                     cmd_pods_set_state, under="pods", parents=[common])
    p.add_argument("name", metavar="NAME")
    p.add_argument("state", choices=[s.value for s in PodState])

    p = cmds.command("fleet", "live workers per pod (from ZooKeeper)", cmd_fleet,
                     description="Live workers per pod.", parents=[common])
    p.add_argument("--pod", metavar="POD", help="only this pod's workers")
