"""`make bench-firstjob`: bench-peers' first-job column alone, in more rounds, and counted.

    python -m bench.firstjob [--rounds 12] [--n 2000] [--only huey,arq] [--instructions]
                             [--baseline TREE] [--baseline-redis-py VERSION]

1. Wall time: `--rounds` interleaved starts of each worker (podjobs, then each peer, then
   podjobs again ...), each with N jobs queued; a start's figure is the first job's own stamp
   minus the moment the worker was started (`bench.peers.Bench.drain`, as in bench-peers).
   Prints the median and the fastest start of each system.
2. `--instructions`: each worker started under valgrind (callgrind, every thread counted)
   with one job queued whose body ends the process once it has stamped (PEERS_EXIT_AT_FIRST):
   the instructions from exec to the first job, which the machine's load does not move. Each
   system is counted twice; the second count is printed (the first may compile bytecode).

The venvs are bench-peers' (var/peers/, podjobs reinstalled from this tree on every run);
one private redis-server, started and stopped by pid. Bounded: rounds in [1, 50], N in
[1, 20,000], every worker killed by process group after its start. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import peers
from bench.peers import BASE, BASELINE, REPO, VARIANTS, Bench

#: the variants with one worker command each (isolated and per-core ones add nothing here)
SYSTEMS = ("podjobs", "huey", "dramatiq", "rq-simple", "celery-threads", "arq")
VALGRIND_TIMEOUT_S = 300.0


def wall(b: Bench, names: list[str], rounds: int) -> dict[str, list[float]]:
    got: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(rounds):
        for k in names:
            r = b.drain(VARIANTS[k], 1)
            if r.get("first_job_s") is not None:
                got[k].append(float(r["first_job_s"]))
    return got


def instructions(b: Bench, name: str) -> int | None:
    """Instructions from exec to the first job of `name`'s worker (callgrind, all threads)."""
    v = VARIANTS[name]
    with tempfile.TemporaryDirectory(prefix="podjobs-firstjob-") as d:
        b.flush()
        peers.client(v.lib, "fill", 1, b.url)
        env = {**peers._env(b.url, 1), "PEERS_EXIT_AT_FIRST": "1"}
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.%p", *v.argv(b.url)]
        try:
            subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=VALGRIND_TIMEOUT_S,
                           start_new_session=True)
        except subprocess.TimeoutExpired:
            return None
        if b.r().get("peers:first") is None:
            return None
        total = 0
        for f in Path(d).glob("cg.*"):
            for line in f.read_text(errors="replace").splitlines():
                if line.startswith("summary:"):
                    total += int(line.split()[1])
        return total or None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12, help="interleaved starts of each system (1-50)")
    ap.add_argument("--n", type=int, default=2000, help="jobs queued before each start (1-20,000)")
    ap.add_argument("--only", default="huey,arq", help="peers beside podjobs, comma-separated "
                    f"(of {', '.join(SYSTEMS[1:])}; default huey,arq)")
    ap.add_argument("--instructions", action="store_true", help="also count instructions (valgrind)")
    ap.add_argument("--baseline", metavar="TREE", help="another podjobs checkout, as podjobs-base")
    ap.add_argument("--baseline-redis-py", metavar="VERSION",
                    help="the baseline (this tree without --baseline) on this redis-py, e.g. 5.3.1")
    args = ap.parse_args(argv)
    names = ["podjobs"] + [x for x in args.only.split(",") if x]
    unknown = [x for x in names if x not in SYSTEMS]
    if unknown:
        ap.error(f"--only {','.join(unknown)}: not one of {', '.join(SYSTEMS[1:])}")
    if args.instructions and shutil.which("valgrind") is None:
        ap.error("--instructions needs valgrind (apt-get install valgrind)")
    rounds = min(max(args.rounds, 1), 50)
    n = min(max(args.n, 1), 20_000)

    from podjobs.infra.ports import free_port
    from podjobs.infra.servers import RedisServer

    atexit.register(peers._kill_all)
    versions = peers.ensure_venvs()
    versions["podjobs"] = peers.install_podjobs("podjobs", REPO)
    if args.baseline or args.baseline_redis_py:
        BASELINE.append(Path(args.baseline or REPO).resolve())
        versions[BASE] = peers.install_podjobs(BASE, BASELINE[0], args.baseline_redis_py)
        names.insert(1, BASE)
    with tempfile.TemporaryDirectory(prefix="podjobs-firstjob-") as d:
        port = free_port()
        server = RedisServer.in_dir(Path(d), port)
        server.start()
        try:
            server.wait_ready(10)
            b = Bench(f"redis://127.0.0.1:{port}/0", port, n, 30.0, 10, Path(d),
                      time.monotonic() + 3600)
            load = os.getloadavg()[0]
            got = wall(b, names, rounds)
            print(f"first job after the worker starts, {rounds} interleaved starts each, N = {n} "
                  f"(load {load:.2f} -> {os.getloadavg()[0]:.2f}):")
            for k in names:
                v = got[k]
                if v:
                    print(f"  {k:16s} median {statistics.median(v):.3f} s   fastest {min(v):.3f} s")
                else:
                    print(f"  {k:16s} no start ran a job")
            if args.instructions:
                print("instructions from exec to the first job (callgrind, second count):")
                for k in names:
                    instructions(b, k)
                    count = instructions(b, k)
                    print(f"  {k:16s} {count / 1e6:,.1f} M" if count else f"  {k:16s} -")
        finally:
            peers._kill_all()
            server.stop()
    print("; ".join(versions[x] for x in versions if x in {VARIANTS[k].lib for k in names}))
    print("commands: " + "; ".join(shlex.join(VARIANTS[k].argv("URL")[:2]) for k in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
