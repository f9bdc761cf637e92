"""`podjobs pods` and `podjobs fleet`: the pods in ZooKeeper, and their live workers.

    podjobs pods list
    podjobs pods add NAME --redis URL --shard URL [--replace]
    podjobs pods add NAME --backend sql --shard URL     (the queue in tables on the shard)
    podjobs pods set-state NAME active|draining
    podjobs fleet [--pod POD]

Every command takes `--json` and `--zk HOST:PORT[,HOST:PORT...][/root]` (without it:
`$PODJOBS_ZK`, else the topology file of `podjobs dev up`; options.resolve_zk_spec).
Each command is a function `cmd_*(args) -> int` (exit code); errors are `PodjobsError`s,
which `podjobs` prints as one line.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from podjobs.errors import ConfigurationError
from podjobs.infra.topofile import Pod, PodState
from podjobs.table import duration, render

from .options import Commands, action_result, connect, print_json, zk_options
from .schema import iso, redact

# -- pods ---------------------------------------------------------------------------


def cmd_pods_list(args: argparse.Namespace) -> int:
    from podjobs.pods.topology import TopologyStore
    from podjobs.secrets import plain_password

    with connect(args) as zk:
        pods = TopologyStore(zk).pods()
    rows = [pod_row(p) for p in pods.values()]
    for p in pods.values():  # a pod added before references existed, or with --plain-password
        plain = [flag for flag, url in (("--redis", p.redis_url), ("--shard", p.shard_url))
                 if url and plain_password(url)]
        if plain:
            print(f"podjobs: pod {p.name} stores a plain password in ZooKeeper ({', '.join(plain)}); "
                  f"store a reference instead: 'podjobs pods add {p.name} --replace "
                  f"{' '.join(f'{f} URL' for f in plain)}' with the password as ${{env:NAME}} or "
                  f"${{file:PATH}} in each URL", file=sys.stderr)
    if args.json:
        print_json(rows)
    elif not pods:
        print("no pods (add one with 'podjobs pods add NAME --redis URL --shard URL')")
    else:
        print(render(["pod", "state", "backend", "redis", "shard"],
                     [[r["pod"], r["state"], r["backend"], r["redis_url"] or "-", r["shard_url"]]
                      for r in rows]))
    return 0


def pod_row(p: Pod) -> dict[str, Any]:
    """The `pod` noun: its URLs without their passwords."""
    return {"pod": p.name, "state": p.state.value, "redis_url": redact(p.redis_url),
            "shard_url": redact(p.shard_url), "backend": p.backend}


def cmd_pods_add(args: argparse.Namespace) -> int:
    from podjobs.pods.topology import TopologyStore, validate_name
    from podjobs.secrets import plain_password

    if args.backend == "redis" and not args.redis:
        raise ConfigurationError(f"pods add {args.name}: --redis URL is required (or --backend sql "
                                 f"to keep the pod's queue in tables on its shard)")
    for flag, url in (("--redis", args.redis or ""), ("--shard", args.shard)):
        if plain_password(url) and not args.plain_password:
            raise ConfigurationError(
                f"{flag} {redact(url)}: its password would be stored in ZooKeeper in plain text; "
                f"write it as a reference each process resolves, ${{env:NAME}} or "
                f"${{file:PATH}} (e.g. redis://:${{env:P1_REDIS_PASSWORD}}@host:6379/0), or "
                f"pass --plain-password")
    pod = Pod(args.name, args.redis or "", args.shard, backend=args.backend)
    with connect(args) as zk:
        store = TopologyStore(zk)
        existed = zk.exists(zk.path("pods", validate_name("pod", args.name)))
        changed = store.add_pod(pod, replace=args.replace)
        now = store.pod(args.name)
    if not changed:
        msg = f"pod {now.name} already exists with these URLs (unchanged, {now.state.value})"
    else:
        msg = f"{'updated' if existed else 'added'} pod {now.name} ({now.state.value})"
    return action_result(args, "pods add", [now.name] if changed else [], msg, pod=pod_row(now))


def cmd_pods_set_state(args: argparse.Namespace) -> int:
    from podjobs.pods.topology import TopologyStore

    with connect(args) as zk:
        pod = TopologyStore(zk).set_pod_state(args.name, args.state)
    return action_result(args, "pods set-state", [pod.name], f"pod {pod.name} is {pod.state.value}",
                         pod=pod_row(pod))


# -- fleet --------------------------------------------------------------------------


def cmd_fleet(args: argparse.Namespace) -> int:
    from podjobs.pods.registration import fleet
    from podjobs.pods.topology import TopologyStore

    with connect(args) as zk:
        if args.pod:
            TopologyStore(zk).pod(args.pod)  # UnknownPod naming the pods there are
        workers = fleet(zk)
    if args.pod:
        workers = {p: w for p, w in workers.items() if p == args.pod}
    if args.json:
        print_json([fleet_row(p, w) for p, items in sorted(workers.items()) for w in items])
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
            up = duration(now - float(started)) if isinstance(started, int | float) else ""
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


def fleet_row(pod: str, w: dict[str, Any]) -> dict[str, Any]:
    """A worker as registered in ZooKeeper, as the `worker` noun (`podjobs workers` has the
    same keys, read from the pod's Redis)."""
    queues = w.get("queues")
    started = w.get("started")
    return {"pod": pod, "worker": w.get("worker_id"), "alive": True, "host": w.get("host"),
            "pid": w.get("pid"), "queues": queues if isinstance(queues, list) else
            [q for q in str(queues or "").split(",") if q],
            "concurrency": w.get("concurrency"), "isolation": w.get("isolation"),
            "started_at": iso(started) if isinstance(started, int | float) else None, "busy": []}


# -- parser -------------------------------------------------------------------------


def register(cmds: Commands) -> None:
    common = zk_options()
    cmds.group("pods", "the pods in ZooKeeper: list, add, set-state (active or draining)",
               description="The pods in ZooKeeper. Drain a pod with 'podjobs pods set-state "
                           "NAME draining' (it takes no new jobs or tenants).")
    cmds.command("list", "list pods with their state, Redis and shard (passwords hidden)",
                 cmd_pods_list, under="pods", parents=[common], noun="pod")
    p = cmds.command("add", "add a pod (idempotent)", cmd_pods_add, under="pods", parents=[common],
                     noun="action")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--redis", metavar="URL", help="the pod's Redis URL (required unless --backend sql)")
    p.add_argument("--backend", choices=["redis", "sql"], default="redis",
                   help="where the pod's queue lives: redis (default) or sql (tables on its shard)")
    p.add_argument("--shard", required=True, metavar="URL", help="the pod's database shard URL")
    p.add_argument("--replace", action="store_true", help="change the URLs of an existing pod")
    p.add_argument("--plain-password", action="store_true",
                   help="store a password written in a URL as it is (default: refused; write "
                        "${env:NAME} or ${file:PATH} instead, resolved by each process)")
    p = cmds.command("set-state", "mark a pod active or draining (takes no new tenants)",
                     cmd_pods_set_state, under="pods", parents=[common], noun="action")
    p.add_argument("name", metavar="NAME")
    p.add_argument("state", choices=[s.value for s in PodState])

    p = cmds.command("fleet", "live workers per pod (from ZooKeeper)", cmd_fleet,
                     description="Live workers per pod.", parents=[common], noun="worker")
    p.add_argument("--pod", metavar="POD", help="only this pod's workers")
