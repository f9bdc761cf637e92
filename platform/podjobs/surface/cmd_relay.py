"""`podjobs relay`: move one pod's committed outbox rows (transactional enqueue) to its Redis.

    podjobs relay --pod NAME [--zk HOSTS/ROOT] [--batch 1000]    until SIGTERM/SIGINT
    podjobs relay --pod NAME --once [--json]                      what is there now, then exit

Run one or more per pod: they elect one holder per pod through ZooKeeper (kazoo's Lock
recipe), the others wait to take over (podjobs.pods.relay). `--once` takes no lock.
"""

from __future__ import annotations

import argparse
import signal
import threading

from .options import (
    Commands,
    action_result,
    add_log_args,
    open_zk,
    resolve_zk_spec,
    setup_logs,
    zk_options,
)


def cmd_relay(args: argparse.Namespace) -> int:
    from podjobs.pods.relay import PodRelay

    if not args.once:
        setup_logs(args)  # a process that runs on (--once prints its one result)
    zk = open_zk(resolve_zk_spec(args.zk), connect_timeout=10)
    try:
        relay = PodRelay(zk, args.pod, batch=args.batch)
        if args.once:
            n = relay.once()
            relay.backend.close()
            return action_result(args, "relayed", [], f"pod {args.pod}: {n} job(s) moved from the "
                                 f"outbox to Redis", count=n)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        print(f"podjobs relay: pod {args.pod} (waiting for the relay lock)", flush=True)
        relay.run(stop)
        return 0
    finally:
        zk.stop()


def register(cmds: Commands) -> None:
    p = cmds.command("relay", "move a pod's committed outbox rows to its Redis", cmd_relay,
                     parents=[zk_options()], noun="action",
                     description="Move committed rows of the pod's outbox table (jobs enqueued "
                                 "with db=session) to its Redis, one relay per pod at a time.")
    p.add_argument("--pod", required=True, help="the pod whose shard and Redis to relay")
    p.add_argument("--batch", type=int, default=1000, help="rows per round trip (default 1000)")
    p.add_argument("--once", action="store_true", help="move what is there now, then exit")
    add_log_args(p)
