"""`make bench-scale`: what the tenant directory costs at 10k / 100k / 1M tenants (issue 17).

One local cluster (ZooKeeper and 20 pods' redis-servers; shards sqlite, unused).
For each size, on a fresh ZooKeeper root:

- register: the tenants, spread over the pods, with one `assign_many` (one write per
  bucket);
- first enqueue: a fresh process (`python -m bench.scale child-first`) connects,
  routes one job of a random tenant and enqueues it: the time from its `connect()`
  to the job in Redis, and its RSS then (median of 3 processes);
- change p50/p99: K client processes each watch one probe tenant's bucket; the
  bench moves the probe between pods 20 times; each client reports when it saw each
  version (one clock: one machine);
- sign-up CPU per client: the same K clients' CPU time over 200 sign-ups of new
  tenants, per sign-up;
- reconnect: ZooKeeper is stopped and started again while the K clients each hold
  64 buckets; from ZooKeeper answering again until every client is caught up (not
  stale; kazoo's reconnect backoff, up to 2 s, included), and the most threads any
  client had meanwhile;
- move --status: `moves_in_progress` with 5 moves under way (the moves index);
- reconnect storm (the largest size only): `--storm` N (default 100) watcher processes,
  each holding 64 buckets, in a pids cgroup (bench/pidcap.py), reconnect at once after a
  ZooKeeper restart: the time until all are caught up, and the threads and tasks they ran;
- bucket / data / ZK heap: the largest bucket node, all bucket nodes together, and
  ZooKeeper's used heap after a full GC (jcmd/jstat).

Prints a table (growth per size) and writes bench/results/scale.json. `--sizes`
picks the sizes (default 10000,100000,1000000), `--clients` K (default 10, at most 12).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import podjobs
from podjobs.table import render

REPO = Path(__file__).resolve().parent.parent
PODS = 20
CHANGES = 20
SIGNUPS = 200
RECONNECT_BUCKETS = 64
STEP = 1_000_000
DEADLINE_S = 120.0
#: the storm's pids cgroup allows this many tasks a client (a watcher runs ~8 threads)
STORM_TASKS_PER_CLIENT = 40


@podjobs.job(name="bench.scale", queue="bench")
def scale_job(i: int) -> None:
    pass


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- child processes ----------------------------------------------------------------------


def child_first(zk: str, root: str, tenant: str) -> None:
    """A fresh process: connect, route and enqueue one job; print the figures."""
    from podjobs.pods.router import connect

    t = time.perf_counter()
    client = connect(zk, root)
    client.enqueue_call(scale_job.call(1), tenant=tenant)
    took = time.perf_counter() - t
    d = client.router.directory
    print(json.dumps({"first_s": took, "rss_mb": rss_mb(), "threads": threading.active_count(),
                      "buckets": d.loaded_buckets, "tenants": d.loaded_tenants}), flush=True)
    client.close()


def child_watch(zk: str, root: str, probe: str) -> None:
    """A client that watches the probe's bucket (+ RECONNECT_BUCKETS more); reports each
    version of the probe it sees, its CPU time on request, and its reconnects."""
    import logging
    import os

    from podjobs.pods.directory import Change, Directory
    from podjobs.pods.zk import ZK

    if os.environ.get("BENCH_SCALE_LOG"):  # each client's kazoo states, for a slow reconnect
        logging.basicConfig(level=logging.INFO, format="%(created).3f %(process)d %(name)s %(message)s")
    z = ZK(zk, root)
    z.start(30)
    d = Directory(z).start()
    d.pod_of(probe)
    seen: list[tuple[int, float]] = []
    lock = threading.Lock()

    def on_change(c: Change) -> None:
        if c.name == probe:
            e = d.tenant(probe)
            if e is not None:
                with lock:
                    seen.append((e.version, time.time()))

    d.add_listener(on_change)
    max_threads = [threading.active_count()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            max_threads[0] = max(max_threads[0], threading.active_count())

    threading.Thread(target=sample, daemon=True).start()
    print(json.dumps({"ready": True, "threads": threading.active_count()}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "cpu":
            print(json.dumps({"cpu": time.process_time()}), flush=True)
        elif cmd == "load":
            d._load([i for i in range(RECONNECT_BUCKETS) if i not in d._buckets])
            max_threads[0] = threading.active_count()
            print(json.dumps({"loaded": d.loaded_buckets, "rss_mb": rss_mb()}), flush=True)
        elif cmd == "synced":
            d.wait_for(lambda x: x.stale, 30)
            ok = d.wait_for(lambda x: not x.stale, 60)
            print(json.dumps({"synced": ok, "at": time.time(), "max_threads": max_threads[0],
                              "resyncs": d.resyncs}), flush=True)
        elif cmd == "seen":
            with lock:
                print(json.dumps({"seen": seen}), flush=True)
        elif cmd == "quit":
            break
    stop.set()
    d.stop()
    z.stop()


# -- the parent ---------------------------------------------------------------------------


def spawn(*args: str, preexec: Any = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bench.scale", *args], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=preexec)


def ask(p: subprocess.Popen[str], cmd: str | None = None) -> dict[str, Any]:
    assert p.stdin is not None and p.stdout is not None
    if cmd is not None:
        p.stdin.write(cmd + "\n")
        p.stdin.flush()
    line = p.stdout.readline()
    if not line:
        raise RuntimeError(f"bench child {p.args} ended early (exit {p.poll()})")
    out: dict[str, Any] = json.loads(line)
    return out


def zk_heap_mb(pid: int | None) -> float | None:
    """ZooKeeper's used Java heap after a full GC (jcmd), in MB; None if jcmd cannot say."""
    if pid is None:
        return None
    try:
        subprocess.run(["jcmd", str(pid), "GC.run"], capture_output=True, timeout=30, check=True)
        out = subprocess.run(["jcmd", str(pid), "GC.heap_info"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        used = [int(m) for m in re.findall(r"total \d+K, used (\d+)K", out)]
        return sum(used) / 1024 if used else None
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        say(f"no ZooKeeper heap figure (jcmd on pid {pid}): {exc!r}")
        return None


def restart_and_catch_up(kids: list[subprocess.Popen[str]], zk_server: Any) -> tuple[list[dict[str, Any]], float]:
    """Stop and start ZooKeeper under the watcher processes `kids`; their "synced" answers,
    and the seconds from ZooKeeper answering again (its JVM start is not ours to count) until
    the last of them caught up."""
    for kid in kids:
        assert kid.stdin is not None
        kid.stdin.write("synced\n")
        kid.stdin.flush()
    zk_server.stop(timeout=10)
    time.sleep(1.0)
    zk_server.start()
    zk_server.wait_ready(60)
    t0 = time.time()
    synced = [ask(kid) for kid in kids]
    return synced, max(s["at"] for s in synced) - t0


def reconnect_storm(topo: Any, zk_server: Any, root: str, n: int) -> dict[str, Any]:
    """`n` watcher processes (in a pids cgroup: at most STORM_TASKS_PER_CLIENT tasks each)
    hold RECONNECT_BUCKETS buckets; ZooKeeper is stopped and started; the time from its
    answering again until every one is caught up, the most threads in one, and the tasks
    in the cgroup after the catch-up (a thread storm would show in both)."""
    from bench.pidcap import PidsCap

    probe = "shop-0000000"
    row: dict[str, Any] = {"storm_clients": n}
    with PidsCap("podjobs-bench-storm", n * STORM_TASKS_PER_CLIENT) as cap:
        kids: list[subprocess.Popen[str]] = []
        try:
            for _ in range(n):
                kids.append(spawn("child-watch", topo.zookeeper, root, probe, preexec=cap.enter))
            for kid in kids:
                ask(kid)
            for kid in kids:
                ask(kid, "load")
            row["storm_tasks_before"] = cap.current()
            synced, row["storm_s"] = restart_and_catch_up(kids, zk_server)
            t0 = max(s["at"] for s in synced) - row["storm_s"]  # ZooKeeper answering again
            times = sorted(s["at"] - t0 for s in synced)
            row["storm_p50_s"] = times[len(times) // 2]
            row["storm_p90_s"] = times[int(len(times) * 0.9)]
            row["storm_ok"] = all(s["synced"] for s in synced)
            row["storm_max_threads"] = max(s["max_threads"] for s in synced)
            row["storm_tasks_after"] = cap.current()
            say(f"storm: {n} clients caught up {row['storm_s']:.2f} s after the restart (p50 "
                f"{row['storm_p50_s']:.2f} s, p90 {row['storm_p90_s']:.2f} s) "
                f"(all synced: {row['storm_ok']}), at most {row['storm_max_threads']} threads in "
                f"a client, {row['storm_tasks_before']} -> {row['storm_tasks_after']} tasks")
        finally:
            _quit(kids)
    return row


def _quit(kids: list[subprocess.Popen[str]]) -> None:
    for kid in kids:
        try:
            ask(kid, "quit") if kid.poll() is None else None
        except (RuntimeError, BrokenPipeError, ValueError):
            pass
    for kid in kids:
        try:
            kid.wait(30)
        except subprocess.TimeoutExpired:
            kid.kill()


def measure(size: int, topo: Any, zk_server: Any, clients: int, storm: int = 0) -> dict[str, Any]:
    from podjobs.pods.moves import moves_in_progress
    from podjobs.pods.topology import TenantState, TopologyStore, register_topology
    from podjobs.pods.zk import ZK

    root = f"/bench-scale-{size}-{random.getrandbits(32):x}"
    zk = ZK(topo.zookeeper, root, timeout=30)
    zk.start(30)
    store = TopologyStore(zk)
    register_topology(zk, topo)
    names = [p.name for p in topo.pods]
    row: dict[str, Any] = {"tenants": size, "pods": len(names), "clients": clients}
    t = time.perf_counter()
    for start in range(0, size, STEP):
        store.assign_many({f"shop-{i:07d}": names[i % len(names)]
                           for i in range(start, min(size, start + STEP))})
    row["register_s"] = time.perf_counter() - t
    say(f"{size:,}: registered in {row['register_s']:.1f} s")
    sizes = [len(raw) for raw, _ in
             (v for v in zk.read_watched([store.buckets.path(i) for i in range(store.buckets.buckets)],
                                         None).values() if v is not None)]
    row["bucket_max_kb"] = max(sizes) / 1024
    row["data_mb"] = sum(sizes) / 2**20

    firsts = []
    for _ in range(3):
        p = spawn("child-first", topo.zookeeper, root, f"shop-{random.randrange(size):07d}")
        firsts.append(ask(p))
        p.wait(DEADLINE_S)
    row["first_s"] = statistics.median(f["first_s"] for f in firsts)
    row["rss_mb"] = statistics.median(f["rss_mb"] for f in firsts)
    say(f"{size:,}: first routed enqueue {row['first_s']:.3f} s, RSS {row['rss_mb']:.0f} MB")

    probe = "shop-0000000"
    kids = [spawn("child-watch", topo.zookeeper, root, probe) for _ in range(clients)]
    try:
        for kid in kids:
            ask(kid)
        entry = store.where(probe)
        sent: dict[int, float] = {}
        for n in range(CHANGES):
            entry = store.set_tenant(replace(entry, pod=names[(n + 1) % len(names)]))
            sent[entry.version] = time.time()
            time.sleep(0.05)
        time.sleep(0.5)
        lat = []
        for kid in kids:
            got = {v: at for v, at in ask(kid, "seen")["seen"]}
            lat += [1000 * (got[v] - at) for v, at in sent.items() if v in got]
        lat.sort()
        row["change_seen"] = f"{len(lat)}/{len(sent) * clients}"
        row["change_p50_ms"] = lat[len(lat) // 2] if lat else None
        row["change_p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None
        say(f"{size:,}: change p50 {row['change_p50_ms']:.1f} ms p99 {row['change_p99_ms']:.1f} ms")

        cpu0 = [ask(kid, "cpu")["cpu"] for kid in kids]
        for n in range(SIGNUPS):
            store.assign(f"new-{size}-{n}", names[n % len(names)])
        time.sleep(0.5)
        cpu1 = [ask(kid, "cpu")["cpu"] for kid in kids]
        row["signup_cpu_us"] = 1e6 * statistics.median(b - a for a, b in zip(cpu0, cpu1, strict=True)) / SIGNUPS

        loaded = [ask(kid, "load") for kid in kids]
        row["rss_64_buckets_mb"] = statistics.median(x["rss_mb"] for x in loaded)
        synced, row["reconnect_s"] = restart_and_catch_up(kids, zk_server)
        row["reconnect_ok"] = all(s["synced"] for s in synced)
        row["reconnect_max_threads"] = max(s["max_threads"] for s in synced)
        say(f"{size:,}: {clients} clients caught up {row['reconnect_s']:.2f} s after the restart, "
            f"at most {row['reconnect_max_threads']} threads in a client")
    finally:
        _quit(kids)
    zk.stop()
    zk = ZK(topo.zookeeper, root, timeout=30)
    zk.start(30)
    store = TopologyStore(zk)
    for n in range(5):
        e = store.where(f"shop-{n * 7 + 1:07d}")
        store.set_tenant(replace(e, state=TenantState.MOVING, move={"to": names[0], "step": "carry"}))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        assert len(moves_in_progress(zk)) == 5
        times.append(time.perf_counter() - t)
    row["move_status_ms"] = 1000 * statistics.median(times)
    row["zk_heap_mb"] = zk_heap_mb(zk_server.pid)
    if storm:
        zk.stop()  # its session may expire during the restart: a fresh one cleans up
        row.update(reconnect_storm(topo, zk_server, root, storm))
        zk = ZK(topo.zookeeper, root, timeout=30)
        zk.start(30)
    zk.delete(zk.path(), recursive=True)
    zk.stop()
    return row


def say(msg: str) -> None:
    print(f"bench-scale: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "child-first":
        child_first(*args[1:4])
        return 0
    if args and args[0] == "child-watch":
        child_watch(*args[1:4])
        return 0
    ap = argparse.ArgumentParser(prog="bench.scale", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--pods", type=int, default=PODS)
    ap.add_argument("--storm", type=int, default=100,
                    help="watcher processes reconnecting at once at the largest size (0: none; "
                         "at most 200; needs a writable pids cgroup)")
    opts = ap.parse_args(args)
    clients = max(1, min(12, opts.clients))
    storm = max(0, min(200, opts.storm))
    if storm:
        from bench.pidcap import PidsCap

        if not PidsCap.available():
            say(f"no writable pids cgroup: the {storm}-client reconnect storm is left out")
            storm = 0
    sizes = [int(s) for s in opts.sizes.split(",")]
    rows = []
    from podjobs.infra.cluster import Cluster

    with tempfile.TemporaryDirectory(prefix="podjobs-bench-scale-") as d:
        cluster = Cluster(d, die_with_parent=True)
        topo = cluster.up(opts.pods, db="sqlite")
        server = next(s for s in cluster.servers() if s.kind == "zookeeper")
        try:
            for size in sizes:
                rows.append(measure(size, topo, server, clients, storm if size == sizes[-1] else 0))
        finally:
            cluster.down(purge=True)
    print(table(rows))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(rows, indent=2))
    print(f"\nwritten: {out / 'scale.json'}; bench process max RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


def table(rows: list[dict[str, Any]]) -> str:
    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    head = ["tenants", "register", "first enqueue", "client RSS", "watcher RSS, 64 buckets",
            "change p50/p99", "sign-up CPU/client", "reconnect (threads)", "move --status",
            "largest bucket", "bucket data", "ZK heap"]
    body = [[f"{r['tenants']:,}", f"{r['register_s']:.1f} s", f"{r['first_s'] * 1000:.0f} ms",
             f"{r['rss_mb']:.0f} MB", f"{r['rss_64_buckets_mb']:.0f} MB",
             f"{f(r['change_p50_ms'], '.1f')}/{f(r['change_p99_ms'], '.1f')} ms ({r['change_seen']})",
             f"{r['signup_cpu_us']:.0f} us", f"{r['reconnect_s']:.2f} s ({r['reconnect_max_threads']})",
             f"{r['move_status_ms']:.1f} ms", f"{r['bucket_max_kb']:.1f} KB",
             f"{r['data_mb']:.1f} MB", f"{f(r['zk_heap_mb'], '.0f')} MB"] for r in rows]
    growth = []
    for a, b in zip(rows, rows[1:], strict=False):
        x = b["tenants"] / a["tenants"]
        growth.append(f"x{x:g} tenants: first enqueue x{b['first_s'] / a['first_s']:.2f}, RSS "
                      f"x{b['rss_mb'] / a['rss_mb']:.2f}, change p99 "
                      f"x{(b['change_p99_ms'] or 0) / max(a['change_p99_ms'] or 1e-9, 1e-9):.2f}, "
                      f"move --status x{b['move_status_ms'] / a['move_status_ms']:.2f}, bucket data "
                      f"x{b['data_mb'] / a['data_mb']:.1f}")
    clients = rows[0]["clients"] if rows else 0
    storm = [f"reconnect storm at {r['tenants']:,} tenants: {r['storm_clients']} clients caught "
             f"up {r['storm_s']:.2f} s after ZooKeeper answered again (all synced: "
             f"{r['storm_ok']}); at most {r['storm_max_threads']} threads in a client; "
             f"{r['storm_tasks_before']} -> {r['storm_tasks_after']} tasks in their cgroup"
             for r in rows if "storm_s" in r]
    return (render(head, body) + f"\n\n{PODS} pods, {clients} client processes; "
            + "\n".join(["growth:", *growth, *storm]))


if __name__ == "__main__":
    sys.exit(main())
