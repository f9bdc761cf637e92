"""`make demo`: start a local 3-pod cluster, run two workloads on it, stop it.

1. Starts ZooKeeper, a Redis per pod (p1..p3) and a private MariaDB with one
   shard database per pod, in a fresh temp dir (every server dies with this
   process), prints the topology and checks that every server answers.
2. Single pod: enqueues a workload on pod p1 (jobs in demo/app.py: three
   priority queues, a bulk enqueue, a chain, a scheduled job, a flaky job that
   retries and a broken one that ends in the dead set), starts two real worker
   processes (`python -m podjobs.cli worker --redis URL`), waits until all of it
   settled and prints what ran (in which order), what retried and what died.
   Then stops those workers (SIGTERM).
3. Tenants on 3 pods: registers the pods in ZooKeeper, assigns shop-1..shop-12
   over p1..p3, creates `orders` on every shard, configures the client with
   `zk=`, shows an unknown tenant refused (`UnknownTenant`, nothing written),
   enqueues one `record_order` per order (shop-N places N), starts one worker
   per pod (`podjobs worker --pod pN --zk ...`), waits for every row, prints
   `podjobs tenants list` and `podjobs fleet` and, read back from each shard,
   which pod ran what: every tenant's rows are only in its own pod's shard.
4. A backfill that survives a worker restart: creates `accounts` on p1's shard
   (30,000 rows of shop-1 and 3,000 of shop-4, one bulk insert), enqueues the
   iteration job `BackfillFingerprints` for shop-1 (a batch of rows per item, keyset
   cursor, a checkpoint per batch) and draws its progress (a bar redrawn in place on a
   terminal, a line every 0.5 s otherwise). Part way it stops p1's worker with SIGTERM
   (the job checkpoints, goes back to its queue with its cursor, attempt unchanged),
   starts a new worker for p1 and follows the job from the checkpoint to 100%; then
   reads the shard back: every shop-1 row backfilled exactly once, shop-4 untouched.
5. Migrations as jobs: starts two scheduler processes (`podjobs scheduler
   --migrations demo/migrations`; one leads, one stands by) while orders keep
   being enqueued. The leader rolls the two new revisions out pod by pod (canary
   p1 first, then p2, then p3), one at a time per shard; revision 0002 is a data
   migration whose backfill fills `orders.total_cents`. `podjobs migrations wait`
   prints the progress and exits 0; then `migrations status`, the timeline read
   from each shard's `podjobs_migrations` table, every order enqueued during the
   rollout written, and the periodic reconciliation job's report per pod.
6. Stops the schedulers and workers with SIGTERM and the cluster, removes the temp
   dir; exits 0, or 1 after printing the end of every server and worker log.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import sqlalchemy

import podjobs
from podjobs import cli, keys
from podjobs.backend import RedisBackend
from podjobs.infra.cluster import Cluster
from podjobs.infra.topofile import Topology, format_topology
from podjobs.iteration import Progress, State
from podjobs.iteration.admin import Iterations
from podjobs.ops import Inspector
from podjobs.pods.registration import fleet
from podjobs.pods.router import PodClient
from podjobs.pods.topology import TopologyStore, register_topology
from podjobs.pods.zk import ZK
from podjobs.table import render

REPO = Path(__file__).resolve().parent.parent
N_PODS = 3
N_WORKERS = 2
QUEUES = "critical,default,low"
#: seconds the workload may take once the workers are up
WORKLOAD_TIMEOUT = 30.0
#: the ZooKeeper root of the pod topology
ZK_ROOT = "/podjobs"
#: tenants shop-1..shop-N, round robin over the pods; shop-N places N orders
N_TENANTS = 12
UNKNOWN_TENANT = "shop-99"
#: the backfill: on this pod, for this tenant; rows of another tenant of the pod stay untouched
BACKFILL_POD, BACKFILL_TENANT, OTHER_TENANT = "p1", "shop-1", "shop-4"
#: accounts 1..N; every OTHER_EVERY-th one belongs to OTHER_TENANT (30,000 + 3,000)
BACKFILL_ACCOUNTS, OTHER_EVERY = 33_000, 11
BACKFILL_BATCH = 250
#: seconds the job sleeps after each batch (a throttled backfill; about 5 s in all)
BACKFILL_PAUSE_S = 0.02
#: the worker gets SIGTERM once this share of the batches is done
INTERRUPT_AT = 0.4
BACKFILL_TIMEOUT = 30.0
#: seconds between progress lines when stdout is not a terminal
PROGRESS_EVERY_S = 0.5
LOG_TAIL_LINES = 20
#: the demo's migrations, and the reconciliation's cron (every 2 s, seconds field)
MIGRATIONS_DIR = REPO / "demo" / "migrations"
RECONCILE_CRON = "* * * * * */2"
#: orders enqueued (one every ROLLOUT_ENQUEUE_EVERY_S) while the scheduler migrates
ROLLOUT_ORDERS, ROLLOUT_ENQUEUE_EVERY_S = 120, 0.03
MIGRATION_TIMEOUT = 60.0


class DemoFailed(Exception):
    """A check or a wait of the demo failed; the message says which."""


def heading(title: str) -> None:
    print(f"\n== {title} ==")


def short_args(args: list[Any]) -> str:
    return ", ".join(json.dumps(a) for a in args)


# -- 1. cluster and checks ----------------------------------------------------------------


def check(what: str, target: str, probe: Callable[[], str]) -> None:
    """Run one probe and print one line; DemoFailed if it raises."""
    t = time.perf_counter()
    try:
        result = probe()
    except Exception as exc:
        print(f"  FAIL  {what:<16} {target}: {type(exc).__name__}: {exc}")
        raise DemoFailed(f"{what} at {target} does not answer: {exc}") from exc
    ms = (time.perf_counter() - t) * 1000
    print(f"  ok    {what:<16} {target:<48} {result} ({ms:.0f} ms)")


def check_servers(topology: Topology) -> None:
    import sqlalchemy
    from kazoo.client import KazooClient

    for pod in topology.pods:
        def ping(url: str = pod.redis_url) -> str:
            r = redis.Redis.from_url(url, socket_timeout=5)
            try:
                return "PING -> PONG" if r.ping() else "PING -> ?"
            finally:
                r.close()

        check(f"redis {pod.name}", pod.redis_url, ping)
    for pod in topology.pods:
        def select_1(url: str = pod.shard_url) -> str:
            engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
            try:
                with engine.connect() as conn:
                    one = conn.execute(sqlalchemy.text("SELECT 1")).scalar()
            finally:
                engine.dispose()
            if one != 1:
                raise DemoFailed(f"SELECT 1 returned {one!r}")
            return "SELECT 1 -> 1"

        check(f"shard {pod.name}", pod.shard_url.split("://", 1)[-1], select_1)

    def list_root() -> str:
        zk = KazooClient(hosts=topology.zookeeper, timeout=5)
        zk.start(timeout=10)
        try:
            children = sorted(zk.get_children("/"))
        finally:
            zk.stop()
            zk.close()
        return f"ls / -> {children}"

    check("zookeeper", topology.zookeeper, list_root)


# -- 2. workload --------------------------------------------------------------------------


def enqueue_workload() -> dict[str, Any]:
    """Enqueue everything (lowest priority first, to show the workers reorder it).

    Returns what to expect: successful runs per queue and the dead jobs.
    """
    from demo import app

    app.rebuild_search_index.enqueue(2)
    app.rebuild_search_index.enqueue(3)
    app.broken_export.enqueue(13)
    images = [(i, size) for i in range(1, 13) for size in ("thumb", "large")]
    app.resize_image.enqueue_many(images)
    app.flaky_webhook.enqueue(7)
    for user_id in (2, 3, 4):
        app.send_welcome_email.enqueue(user_id)
    # a chain: the search index of shop 1 is rebuilt once its owner got the email
    app.send_welcome_email.call(1).then(app.rebuild_search_index, 1).enqueue()
    app.rebuild_search_index.enqueue_in(1.0, 42)
    print("  low       rebuild_search_index(2), (3), broken_export(13)")
    print(f"  default   resize_image x{len(images)} (one enqueue_many), flaky_webhook(7)")
    print("  critical  send_welcome_email(2), (3), (4), "
          "send_welcome_email(1).then(rebuild_search_index(1))")
    print("  in 1 s    rebuild_search_index(42) (enqueue_in)")
    return {"ok": {"critical": 4, "default": len(images) + 1, "low": 4}, "dead": 1}


def _die_with_parent() -> Callable[[], None]:
    """preexec_fn: SIGKILL this child if the demo dies (Linux prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def spawn_worker(target: list[str], record_url: str, log_file: Path) -> subprocess.Popen[bytes]:
    """`podjobs worker` on `target` (["--redis", URL] or ["--pod", NAME, "--zk", SPEC])."""
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=pythonpath, PODJOBS_DEMO_RECORD_URL=record_url)
    cmd = [sys.executable, "-m", "podjobs.cli", "worker", *target, "--app", "demo.app,demo.reconcile",
           "--queues", QUEUES, "--concurrency", "4", "--heartbeat-ttl", "2",
           "--poll-interval", "0.1"]
    with log_file.open("ab") as log:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent())


def read_log(r: redis.Redis) -> list[dict[str, Any]]:
    from demo.app import LOG_KEY

    return [json.loads(x) for x in r.lrange(LOG_KEY, 0, -1)]


def wait_settled(r: redis.Redis, ins: Inspector, expect: dict[str, Any],
                 workers: list[subprocess.Popen[bytes]]) -> float:
    """Poll Redis until every expected run happened and nothing is left; returns seconds."""
    want_ok = sum(expect["ok"].values())
    t0 = time.monotonic()
    while True:
        ok = sum(1 for e in read_log(r) if e["ok"])
        dead = int(r.zcard(keys.DEAD))
        idle = all(q.size == q.scheduled == q.retrying == q.in_flight == 0 for q in ins.queues())
        if ok >= want_ok and dead >= expect["dead"] and idle:
            return time.monotonic() - t0
        for w in workers:
            if w.poll() is not None:
                raise DemoFailed(f"worker pid {w.pid} exited with code {w.returncode}")
        if time.monotonic() - t0 > WORKLOAD_TIMEOUT:
            raise DemoFailed(
                f"workload not settled after {WORKLOAD_TIMEOUT:.0f} s: {ok}/{want_ok} runs, "
                f"{dead}/{expect['dead']} dead, queues idle: {idle}")
        time.sleep(0.05)


def report(r: redis.Redis, ins: Inspector, expect: dict[str, Any], url: str) -> None:
    entries = read_log(r)
    runs = [e for e in entries if e["ok"]]
    fails = [e for e in entries if not e["ok"]]

    heading("what ran")
    rows = []
    for q in QUEUES.split(","):
        pos = [i for i, e in enumerate(runs, 1) if e["queue"] == q]
        rows.append([q, len(pos), expect["ok"][q], min(pos, default="-"), max(pos, default="-")])
    print(render(["queue", "ran", "expected", "first #", "last #"], rows))
    print("\nfirst runs, in order (everything was enqueued low first, critical last):")
    print(render(["#", "job", "queue", "attempt", "worker pid"],
                 [[i, f"{e['job']}({short_args(e['args'])})", e["queue"], e["attempt"], e["pid"]]
                  for i, e in enumerate(runs[:5], 1)]))
    by_pid: dict[int, int] = {}
    for e in runs:
        by_pid[e["pid"]] = by_pid.get(e["pid"], 0) + 1
    print("\nper worker: " + ", ".join(f"pid {p} ran {n}" for p, n in sorted(by_pid.items())))
    pos_of = {(e["job"], tuple(e["args"])): i for i, e in enumerate(runs, 1)}
    head, follow = pos_of.get(("send_welcome_email", (1,))), pos_of.get(("rebuild_search_index", (1,)))
    print(f"chain:      send_welcome_email(1) ran #{head}, then rebuild_search_index(1) #{follow}")
    sched = next((e for e in runs if e["job"] == "rebuild_search_index" and e["args"] == [42]), None)
    if sched is not None:
        print(f"scheduled:  rebuild_search_index(42) ran {sched['waited_ms'] / 1000:.2f} s "
              f"after enqueue_in(1.0)")
    for q in QUEUES.split(","):
        got = sum(1 for e in runs if e["queue"] == q)
        if got != expect["ok"][q]:
            raise DemoFailed(f"queue {q}: {got} successful runs, expected {expect['ok'][q]}")

    heading("what retried")
    stats = ins.stats()
    print(render(list(stats), [list(stats.values())]))
    later = {(e["job"], tuple(e["args"]), e["attempt"]) for e in entries}
    print(f"\n{len(fails)} failed attempts; {stats['failed']} were retried (stats 'failed'):")
    print(render(["job", "attempt", "error", "then"],
                 [[f"{e['job']}({short_args(e['args'])})", e["attempt"], e["error"],
                   "retried" if (e["job"], tuple(e["args"]), e["attempt"] + 1) in later else "dead"]
                  for e in fails]))
    flaky_ok = next((e for e in runs if e["job"] == "flaky_webhook"), None)
    if flaky_ok is not None:
        print(f"flaky_webhook({short_args(flaky_ok['args'])}) succeeded on attempt "
              f"{flaky_ok['attempt']}")
    else:
        raise DemoFailed("flaky_webhook never succeeded")

    heading("what died")
    dead = ins.dead()
    print(render(["id", "job", "attempts", "reason", "error"],
                 [[d.get("id"), f"{d.get('job', '').rsplit('.', 1)[-1]}({short_args(d.get('args', []))})",
                   d.get("attempt"), d.get("dead_reason"),
                   f"{(d.get('error') or {}).get('class')}: {(d.get('error') or {}).get('message')}"]
                  for d, _ in dead]))
    if len(dead) != expect["dead"]:
        raise DemoFailed(f"{len(dead)} dead jobs, expected {expect['dead']}")

    run_cli(["dead", "list", "--redis", url])


def run_cli(argv: list[str]) -> None:
    """Print and run one `podjobs` command in this process; DemoFailed unless it exits 0."""
    print(f"\n$ podjobs {' '.join(argv)}")
    sys.stdout.flush()
    rc = cli.main(argv)
    sys.stdout.flush()
    if rc != 0:
        raise DemoFailed(f"podjobs {' '.join(argv)} exited with {rc}")


# -- 3. tenants on 3 pods -----------------------------------------------------------------


def orders_of(tenant: str) -> int:
    """shop-N places N orders."""
    return int(tenant.rsplit("-", 1)[1])


def queued(topology: Topology) -> dict[str, int]:
    """Ready jobs per pod, over all demo queues."""
    out = {}
    for pod in topology.pods:
        r = redis.Redis.from_url(pod.redis_url)
        try:
            out[pod.name] = sum(int(r.llen(keys.queue(q))) for q in QUEUES.split(","))
        finally:
            r.close()
    return out


def setup_tenants(topology: Topology, zk: ZK, engines: dict[str, sqlalchemy.Engine],
                  spec: str) -> tuple[dict[str, str], PodClient]:
    """Pods and tenants into ZooKeeper, `orders` on every shard, the client on `zk=`."""
    from demo import app

    changed = register_topology(zk, topology)
    print(f"  register_topology: pods {', '.join(changed) or 'none changed'} added under "
          f"{zk.path('pods')}")
    names = topology.pod_names
    plan = {f"shop-{i}": names[(i - 1) % len(names)] for i in range(1, N_TENANTS + 1)}
    summary = TopologyStore(zk).assign_many(plan)
    print(f"  assign_many: {len(summary.assigned)} tenants assigned "
          f"({len(summary.unchanged)} already there), round robin:")
    for pod in names:
        print(f"    {pod}: {', '.join(t for t, p in plan.items() if p == pod)}")
    for pod in topology.pods:
        app.metadata.create_all(engines[pod.name])
    dbs = ", ".join(p.shard_url.rsplit("/", 1)[-1] for p in topology.pods)
    print(f"  table orders(id, tenant, pod, order_no, pid) created on the shards {dbs}")
    client = podjobs.configure(zk=spec)
    if not isinstance(client, PodClient):
        raise DemoFailed(f"configure(zk=...) returned a {type(client).__name__}, not a PodClient")
    directory = client.router.directory
    if not directory.wait_for(lambda d: all(d.tenant(t) for t in plan), 10):
        raise DemoFailed("the client's directory did not see every tenant within 10 s")
    print(f'  podjobs.configure(zk="{spec}"): the directory caches {len(directory.pods())} pods, '
          f"{len(directory.tenants())} tenants")
    return plan, client


def refuse_unknown_tenant(topology: Topology) -> None:
    from demo import app

    before = queued(topology)
    print(f'\n  record_order.enqueue(1, tenant="{UNKNOWN_TENANT}")')
    try:
        app.record_order.enqueue(1, tenant=UNKNOWN_TENANT)
    except podjobs.UnknownTenant as exc:
        print(f"  -> UnknownTenant: {exc}")
    else:
        raise DemoFailed(f"the unknown tenant {UNKNOWN_TENANT} was accepted")
    after = queued(topology)
    if after != before:
        raise DemoFailed(f"refused, yet the queues changed: {before} -> {after}")
    print("  nothing written: jobs queued on " + ", ".join(after) + " still "
          + ", ".join(str(n) for n in after.values()))


def enqueue_orders(topology: Topology, plan: dict[str, str]) -> int:
    from demo import app

    for tenant in plan:
        for n in range(1, orders_of(tenant) + 1):
            app.record_order.enqueue(n, tenant=tenant)
    total = sum(orders_of(t) for t in plan)
    got = queued(topology)
    want = {pod: sum(orders_of(t) for t, p in plan.items() if p == pod) for pod in got}
    print(f"\n  record_order.enqueue(n, tenant=t) for each of the {total} orders "
          f"(shop-N places N); queued by pod: " + ", ".join(f"{p} {n}" for p, n in got.items()))
    if got != want:
        raise DemoFailed(f"jobs queued per pod {got}, expected {want}")
    return total


def count_orders(engines: dict[str, sqlalchemy.Engine]) -> int:
    from demo import app

    total = 0
    for engine in engines.values():
        with engine.connect() as conn:
            query = sqlalchemy.select(sqlalchemy.func.count()).select_from(app.orders)
            total += int(conn.execute(query).scalar_one())
    return total


def wait_rows(engines: dict[str, sqlalchemy.Engine], want: int,
              workers: list[subprocess.Popen[bytes]]) -> float:
    """Poll the shards until `want` orders exist; returns seconds."""
    t0 = time.monotonic()
    while True:
        got = count_orders(engines)
        if got >= want:
            return time.monotonic() - t0
        for w in workers:
            if w.poll() is not None:
                raise DemoFailed(f"worker pid {w.pid} exited with code {w.returncode}")
        if time.monotonic() - t0 > WORKLOAD_TIMEOUT:
            raise DemoFailed(f"{got}/{want} order rows after {WORKLOAD_TIMEOUT:.0f} s")
        time.sleep(0.1)


def wait_fleet(zk: ZK, pods: list[str], timeout: float = 10.0) -> None:
    """Until every pod has a live worker registered in ZooKeeper."""
    deadline = time.monotonic() + timeout
    while set(fleet(zk)) < set(pods):
        if time.monotonic() > deadline:
            raise DemoFailed(f"not every pod has a worker in ZooKeeper after {timeout:.0f} s: "
                             f"{sorted(fleet(zk))}")
        time.sleep(0.1)


def report_tenants(topology: Topology, engines: dict[str, sqlalchemy.Engine],
                   plan: dict[str, str], pids: dict[str, int]) -> None:
    """Read every shard back: which pod ran what; DemoFailed if a row is out of place."""
    from demo import app

    heading("which pod ran what (read back from each pod's shard)")
    shards_of: dict[str, set[str]] = {}
    order_nos: dict[str, list[int]] = {}
    rows, problems = [], []
    for pod in topology.pods:
        query = sqlalchemy.select(app.orders.c.tenant, app.orders.c.pod, app.orders.c.order_no,
                                  app.orders.c.pid)
        with engines[pod.name].connect() as conn:
            got = conn.execute(query).all()
        per_tenant: dict[str, int] = {}
        misplaced = 0
        for tenant, row_pod, order_no, pid in got:
            per_tenant[tenant] = per_tenant.get(tenant, 0) + 1
            shards_of.setdefault(tenant, set()).add(pod.name)
            order_nos.setdefault(tenant, []).append(order_no)
            if plan.get(tenant) != pod.name or row_pod != pod.name or pid != pids[pod.name]:
                misplaced += 1
        tenants = sorted(per_tenant, key=orders_of)
        rows.append([pod.name, pod.shard_url.rsplit("/", 1)[-1], pids[pod.name],
                     ", ".join(f"{t} ({per_tenant[t]})" for t in tenants), len(got), misplaced])
        if misplaced:
            problems.append(f"{misplaced} rows in shard {pod.name} belong to another pod")
    print(render(["pod", "shard", "worker pid", "tenants (orders)", "orders", "misplaced"], rows))
    for tenant, pod in plan.items():
        if shards_of.get(tenant) != {pod}:
            problems.append(f"{tenant} (pod {pod}) has rows in shards {sorted(shards_of.get(tenant, ()))}")
        if sorted(order_nos.get(tenant, [])) != list(range(1, orders_of(tenant) + 1)):
            problems.append(f"{tenant}: orders {sorted(order_nos.get(tenant, []))}")
    if UNKNOWN_TENANT in shards_of:
        problems.append(f"{UNKNOWN_TENANT} has rows in {sorted(shards_of[UNKNOWN_TENANT])}")
    if problems:
        raise DemoFailed("; ".join(problems))
    print(f"each of the {len(plan)} tenants has all its orders (1..N, once each) in its own pod's "
          f"shard only,\nwritten by that pod's worker; no row for {UNKNOWN_TENANT} anywhere")


# -- 4. a backfill that survives a worker restart -------------------------------------------


def account_tenant(account_id: int) -> str:
    return OTHER_TENANT if account_id % OTHER_EVERY == 0 else BACKFILL_TENANT


def create_accounts(engine: sqlalchemy.Engine) -> dict[str, int]:
    """`accounts` on the shard, filled in one bulk insert; rows per tenant."""
    from demo import app

    app.backfill_metadata.drop_all(engine)
    app.backfill_metadata.create_all(engine)
    rows = [{"id": i, "tenant": account_tenant(i), "fingerprint": None, "backfilled": 0}
            for i in range(1, BACKFILL_ACCOUNTS + 1)]
    t = time.monotonic()
    with engine.begin() as conn:
        conn.execute(sqlalchemy.insert(app.accounts), rows)
    secs = time.monotonic() - t
    per_tenant: dict[str, int] = {}
    for i in range(1, BACKFILL_ACCOUNTS + 1):
        per_tenant[account_tenant(i)] = per_tenant.get(account_tenant(i), 0) + 1
    print(f"  table accounts(id, tenant, fingerprint NULL, backfilled 0) on podjobs_{BACKFILL_POD}: "
          f"{len(rows):,} rows in one bulk insert ({secs:.2f} s): "
          + ", ".join(f"{tenant} {n:,}" for tenant, n in per_tenant.items()))
    return per_tenant


class ProgressBar:
    """One line redrawn in place (\r) on a terminal; else a line every `every` seconds, and
    whenever `update(..., force=True)`."""

    def __init__(self, every: float = PROGRESS_EVERY_S) -> None:
        self.tty = sys.stdout.isatty()
        self.every = every
        self.last_t = -1e9
        self.last_line = ""
        self.open = False  # a terminal line without its newline yet

    def columns(self) -> int | None:
        """The terminal's width, or None when stdout is not a terminal."""
        return shutil.get_terminal_size().columns if self.tty else None

    def update(self, line: str, force: bool = False) -> None:
        if self.tty:
            sys.stdout.write(f"\r  {line}\x1b[K")
            sys.stdout.flush()
            self.open = True
            self.last_line = line
            return
        now = time.monotonic()
        if line != self.last_line and (force or now - self.last_t >= self.every):
            print(f"  {line}")
            self.last_t, self.last_line = now, line

    def end(self) -> None:
        if self.open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.open = False


def rows_done(p: Progress, total_rows: int) -> int:
    """Every batch but the last is full."""
    return min(p.done * BACKFILL_BATCH, total_rows)


def progress_line(p: Progress, total_rows: int, columns: int | None = None) -> str:
    """`[####....]  41.7%  12,500/30,000 rows  50/120 batches  7,886 rows/s  eta 2.2 s  running`;
    with `columns` (a terminal's width) the bar narrows, then the batches go, then the line is
    cut, to fit."""
    frac = p.done / p.total if p.total else 0.0
    total = f"{p.total:,}" if p.total is not None else "?"
    rate = f"{p.rate * BACKFILL_BATCH:,.0f} rows/s" if p.rate else "- rows/s"
    eta = f"eta {p.eta_s:.1f} s" if p.eta_s is not None else "eta -"
    head = f"{100 * frac:5.1f}%  {rows_done(p, total_rows):>6,}/{total_rows:,} rows  "
    tail = f"{rate:>13}  {eta:<9}  {p.state.value}"
    text = f"{head}{p.done:>3}/{total} batches  {tail}"
    width = 24
    if columns is not None:  # "  [" + bar + "] " + text must fit in columns - 1
        room = columns - 6
        if room - len(text) < 8:
            text = head + tail
        width = max(8, min(width, room - len(text)))
    filled = int(round(frac * width))
    line = f"[{'#' * filled}{'.' * (width - filled)}] {text}"
    return line if columns is None else line[:max(0, columns - 3)]


def follow(adm: Iterations, job_id: str, total_rows: int, bar: ProgressBar,
           until: Callable[[Progress], bool], watch: list[subprocess.Popen[bytes]]) -> Progress:
    """Draw the job's progress until `until(progress)`; DemoFailed if it ends otherwise."""
    t0 = time.monotonic()
    state = None
    try:
        while True:
            p = adm.get(job_id)
            if p is None:
                raise DemoFailed(f"iteration job {job_id} is not in Redis")
            done = until(p)
            bar.update(progress_line(p, total_rows, bar.columns()),
                       force=done or p.state != state)
            state = p.state
            if done:
                return p
            if p.state in (State.SUCCEEDED, State.CANCELLED, State.ERRORED, State.PAUSED):
                raise DemoFailed(f"the backfill is {p.state.value} ({p.error or p.reason or '-'})")
            for w in watch:
                if w.poll() is not None:
                    raise DemoFailed(f"worker pid {w.pid} exited with code {w.returncode}")
            if time.monotonic() - t0 > BACKFILL_TIMEOUT:
                raise DemoFailed(f"backfill: {p.done}/{p.total} batches after "
                                 f"{BACKFILL_TIMEOUT:.0f} s")
            time.sleep(0.1)
    finally:
        bar.end()


def shard_at_checkpoint(engine: sqlalchemy.Engine, cursor: int) -> tuple[int, int]:
    """(rows backfilled up to the cursor, rows backfilled after it) of the tenant."""
    from demo import app

    a = app.accounts
    done = sqlalchemy.func.sum(sqlalchemy.case((a.c.id <= cursor, 1), else_=0))
    beyond = sqlalchemy.func.sum(sqlalchemy.case((a.c.id > cursor, 1), else_=0))
    query = sqlalchemy.select(done, beyond).where(a.c.tenant == BACKFILL_TENANT, a.c.backfilled > 0)
    with engine.connect() as conn:
        row = conn.execute(query).one()
    return int(row[0] or 0), int(row[1] or 0)


def report_runs(r: redis.Redis, stopped_at: Any, old_pid: int, new_pid: int) -> None:
    """The job's runs as its hooks logged them; DemoFailed unless run 2 resumed run 1's cursor
    with the same attempt, on the new worker."""
    from demo import app

    log = [json.loads(x) for x in r.lrange(app.RUNS_KEY, 0, -1)]
    runs = []
    for e in log:
        if e["hook"] in ("start", "resume"):
            runs.append({"pid": e["pid"], "attempt": e["attempt"],
                         "from": "the beginning" if e["hook"] == "start"
                         else f"resumed from cursor {json.dumps(e['cursor'])}", "to": "-"})
        elif e["hook"] == "shutdown" and runs:
            runs[-1]["to"] = json.dumps(e["cursor"])
    print("\n  the job's runs (from its on_start / on_resume / on_shutdown hooks):")
    print("\n".join("    " + line for line in render(
        ["run", "worker pid", "attempt", "started at", "ended at cursor"],
        [[i, x["pid"], x["attempt"], x["from"], x["to"]] for i, x in enumerate(runs, 1)]
    ).splitlines()))
    last = max(i for i in range(1, BACKFILL_ACCOUNTS + 1) if account_tenant(i) == BACKFILL_TENANT)
    want = [(old_pid, 1, "the beginning", json.dumps(stopped_at)),
            (new_pid, 1, f"resumed from cursor {json.dumps(stopped_at)}", json.dumps([last]))]
    got = [(x["pid"], x["attempt"], x["from"], x["to"]) for x in runs]
    if got != want:
        raise DemoFailed(f"the job's runs {got}, expected {want}")


def verify_backfill(engine: sqlalchemy.Engine, per_tenant: dict[str, int]) -> None:
    """Every row of the tenant has fingerprint = f(id) and backfilled = 1; the other tenant's
    rows are untouched."""
    from demo import app

    a = app.accounts
    with engine.connect() as conn:
        got = conn.execute(sqlalchemy.select(a.c.id, a.c.tenant, a.c.fingerprint, a.c.backfilled)).all()
    stats: dict[str, dict[str, int]] = {}
    for account_id, tenant, fp, n in got:
        s = stats.setdefault(tenant, {"rows": 0, "f(id)": 0, "null": 0, "0": 0, "1": 0, ">1": 0})
        s["rows"] += 1
        s["f(id)"] += fp == app.fingerprint(account_id)
        s["null"] += fp is None
        s["0" if n == 0 else "1" if n == 1 else ">1"] += 1
    print(render(["tenant", "rows", "fingerprint = f(id)", "fingerprint NULL", "backfilled 0",
                  "backfilled 1", "backfilled >1"],
                 [[t, f"{s['rows']:,}", f"{s['f(id)']:,}", f"{s['null']:,}", f"{s['0']:,}",
                   f"{s['1']:,}", f"{s['>1']:,}"] for t, s in sorted(stats.items())]))
    mine, other = per_tenant[BACKFILL_TENANT], per_tenant[OTHER_TENANT]
    want = {BACKFILL_TENANT: {"rows": mine, "f(id)": mine, "null": 0, "0": 0, "1": mine, ">1": 0},
            OTHER_TENANT: {"rows": other, "f(id)": 0, "null": other, "0": other, "1": 0, ">1": 0}}
    if stats != want:
        raise DemoFailed(f"accounts after the backfill: {stats}, expected {want}")
    print(f"verified: every one of {BACKFILL_TENANT}'s {mine:,} rows backfilled exactly once "
          f"(fingerprint = id * {app.FINGERPRINT_MUL} mod 2^32, backfilled = 1); "
          f"{OTHER_TENANT}'s {other:,} rows untouched")


def backfill_section(topology: Topology, engines: dict[str, sqlalchemy.Engine], spec: str,
                     workers: list[subprocess.Popen[bytes]], pod_worker: subprocess.Popen[bytes],
                     tmp: Path) -> None:
    """See the module docstring, step 4. Keeps `workers` current (for the teardown)."""
    from demo import app

    pod = topology.pod(BACKFILL_POD)
    engine = engines[BACKFILL_POD]
    heading(f"a backfill that survives a worker restart ({BACKFILL_POD}, tenant {BACKFILL_TENANT})")
    per_tenant = create_accounts(engine)
    total_rows = per_tenant[BACKFILL_TENANT]
    r = redis.Redis.from_url(pod.redis_url)
    backend = RedisBackend(pod.redis_url)
    try:
        adm, ins = Iterations(backend), Inspector(backend)
        h = app.BackfillFingerprints.enqueue(batch=BACKFILL_BATCH, pause_s=BACKFILL_PAUSE_S,
                                             tenant=BACKFILL_TENANT)
        print(f"  BackfillFingerprints.enqueue(batch={BACKFILL_BATCH}, pause_s={BACKFILL_PAUSE_S}, "
              f'tenant="{BACKFILL_TENANT}") -> job {h.id} on {h.pod or BACKFILL_POD}, queue {h.queue}')
        print(f"  each item: UPDATE {BACKFILL_BATCH} rows (keyset on id), then a checkpoint "
              f"(shard commit + cursor in Redis); {BACKFILL_POD}'s worker pid {pod_worker.pid} runs it")
        bar = ProgressBar()
        t_job = time.monotonic()

        def far_enough(p: Progress) -> bool:
            return p.total is not None and p.done >= INTERRUPT_AT * p.total

        p = follow(adm, h.id, total_rows, bar, far_enough, [pod_worker])

        print(f"\n  SIGTERM to {BACKFILL_POD}'s worker pid {pod_worker.pid} mid-backfill "
              f"({p.done}/{p.total} batches checkpointed):")
        clean = stop_workers([pod_worker])
        workers.remove(pod_worker)
        if not clean:
            raise DemoFailed(f"{BACKFILL_POD}'s worker did not exit 0 on SIGTERM")
        p = adm.get(h.id) or p
        if (p.state, p.reason, p.interrupted) != (State.INTERRUPTED, "shutdown", 1):
            raise DemoFailed(f"after SIGTERM the job is {p.state.value} (reason {p.reason!r}, "
                             f"interrupted {p.interrupted}), expected interrupted by a shutdown")
        stopped_at = p.cursor
        print(f"  interrupted at cursor {json.dumps(stopped_at)}: {p.done}/{p.total} batches "
              f"({rows_done(p, total_rows):,} rows) checkpointed, state {p.state.value}, "
              f"last stop {p.reason}")
        up_to, beyond = shard_at_checkpoint(engine, int(stopped_at[0]))
        print(f"  the shard agrees: {up_to:,} rows backfilled, all with id <= {stopped_at[0]}; "
              f"{beyond} after the cursor")
        if (up_to, beyond) != (rows_done(p, total_rows), 0):
            raise DemoFailed(f"shard at the checkpoint: {up_to} rows up to the cursor, {beyond} "
                             f"beyond, expected {rows_done(p, total_rows)} and 0")
        found = ins.find_job(h.id)
        attempt = found.payload.get("attempt")
        print(f"  back on queue {found.queue} with cursor "
              f"{json.dumps(found.payload.get('cursor'))} and attempt {attempt}: a resume, not a "
              f"retry; attempts did not grow")
        if (found.where, found.payload.get("cursor"), attempt) != ("queue", stopped_at, 0):
            raise DemoFailed(f"the interrupted job is {found.where} with cursor "
                             f"{found.payload.get('cursor')} and attempt {attempt}")

        new = spawn_worker(["--pod", BACKFILL_POD, "--zk", spec], pod.redis_url,
                           tmp / f"worker-{BACKFILL_POD}-2.log")
        workers.append(new)
        print(f"\n  a new worker: podjobs worker --pod {BACKFILL_POD} --zk {spec} -> pid {new.pid}")
        p = follow(adm, h.id, total_rows, bar, lambda p: p.state is State.SUCCEEDED, [new])
        print(f"  {p.state.value}: {p.done}/{p.total} batches, {rows_done(p, total_rows):,} rows "
              f"in {time.monotonic() - t_job:.1f} s ({p.elapsed_s:.1f} s running, "
              f"{p.runs} runs, {p.interrupted} interrupted)")
        report_runs(r, stopped_at, pod_worker.pid, new.pid)
        run_cli(["iterations", "show", h.id, "--pod", BACKFILL_POD, "--zk", spec])
    finally:
        r.close()
        backend.close()

    heading(f"the shard after the backfill (read back from podjobs_{BACKFILL_POD}.accounts)")
    verify_backfill(engine, per_tenant)


# -- 5. teardown --------------------------------------------------------------------------


# -- 5. migrations as jobs ----------------------------------------------------------------


def spawn_scheduler(name: str, spec: str, log_file: Path) -> subprocess.Popen[bytes]:
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=pythonpath)
    cmd = [sys.executable, "-m", "podjobs.cli", "scheduler", "--zk", spec, "--id", name,
           "--app", "demo.app,demo.reconcile", "--migrations", str(MIGRATIONS_DIR),
           "--canary", "p1", "--wave", "1", "--queue", "critical", "--interval", "0.2",
           "--session-timeout", "4"]
    with log_file.open("ab") as log:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent())


def stream_cli(argv: list[str], timeout: float) -> int:
    """Run `podjobs ARGV` in a subprocess, printing its output as it comes; its exit code."""
    print(f"\n$ podjobs {' '.join(argv)}")
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    p = subprocess.Popen([sys.executable, "-m", "podjobs.cli", *argv], cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=pythonpath), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    assert p.stdout is not None
    for line in p.stdout:
        print("  " + line.rstrip())
    return p.wait(timeout)


def enqueue_steadily(plan: dict[str, str], n: int, every: float, done: list[int]) -> None:
    """record_order for shop-1..12 in turn, continuing each tenant's order numbers."""
    from demo import app

    tenants = sorted(plan, key=orders_of)
    next_no = {t: orders_of(t) + 1 for t in tenants}
    for i in range(n):
        t = tenants[i % len(tenants)]
        app.record_order.enqueue(next_no[t], tenant=t)
        next_no[t] += 1
        done[0] += 1
        time.sleep(every)


def migration_timeline(engines: dict[str, sqlalchemy.Engine], t0: float) -> list[list[Any]]:
    rows = []
    for pod, engine in engines.items():
        with engine.connect() as conn:
            for rev, state, started, finished in conn.execute(sqlalchemy.text(
                    "SELECT revision, state, started, finished FROM podjobs_migrations ORDER BY id")):
                rows.append([f"{started - t0:6.2f}", f"{(finished or started) - t0:6.2f}", pod, rev,
                             state])
    rows.sort(key=lambda r: float(r[0]))
    return rows


def migrations_section(topology: Topology, engines: dict[str, sqlalchemy.Engine], spec: str,
                       zk: ZK, plan: dict[str, str], schedulers: list[subprocess.Popen[bytes]],
                       tmp: Path) -> None:
    """See the module docstring, step 5."""
    import threading

    from demo import app
    from podjobs.scheduler.revisions import Revisions
    from podjobs.scheduler.runs import RunStore

    revs = Revisions(str(MIGRATIONS_DIR))
    heading(f"migrations as jobs: {len(revs.order)} new revisions, rolled out pod by pod")
    for rev in revs.order:
        doc = revs.get(rev).doc.splitlines()[0]
        print(f"  {rev}: {doc}" + ("  [+ backfill]" if hasattr(revs.get(rev).module, "backfill")
                                   else ""))
    before = count_orders(engines)
    done = [0]
    feeder = threading.Thread(target=enqueue_steadily,
                              args=(plan, ROLLOUT_ORDERS, ROLLOUT_ENQUEUE_EVERY_S, done), daemon=True)
    t0 = time.time()
    feeder.start()
    print(f"\n  enqueuing {ROLLOUT_ORDERS} more orders over "
          f"{ROLLOUT_ORDERS * ROLLOUT_ENQUEUE_EVERY_S:.0f} s while the schedulers run")
    for name in ("sched-a", "sched-b"):
        schedulers.append(spawn_scheduler(name, spec, tmp / f"{name}.log"))
        if name == "sched-a":
            deadline = time.monotonic() + 15
            while not zk.exists(zk.path("scheduler", "leader")):
                if time.monotonic() > deadline or schedulers[0].poll() is not None:
                    raise DemoFailed(f"scheduler sched-a did not lead (see {tmp}/sched-a.log)")
                time.sleep(0.05)
    print(f"  podjobs scheduler --migrations demo/migrations --canary p1 --wave 1 (x2); logs in "
          f"{tmp}/sched-*.log")
    from podjobs.scheduler.leader import contenders

    deadline = time.monotonic() + 15
    while len(contenders(zk)) < 2:
        if time.monotonic() > deadline:
            raise DemoFailed(f"scheduler sched-b did not join the election (see {tmp}/sched-b.log)")
        time.sleep(0.05)
    run_cli(["scheduler", "status", "--zk", spec])
    rc = stream_cli(["migrations", "wait", "--timeout", str(MIGRATION_TIMEOUT), "--interval", "0.3",
                     "--zk", spec], MIGRATION_TIMEOUT + 10)
    if rc != 0:
        raise DemoFailed(f"podjobs migrations wait exited with {rc}")
    run_cli(["migrations", "status", "--zk", spec])
    print("\n  timeline (seconds since the schedulers started; END is the schema step's), from each "
          "shard's podjobs_migrations:")
    print("  " + render(["START", "END", "POD", "REVISION", "STATE"],
                        migration_timeline(engines, t0)).replace("\n", "\n  "))
    store = RunStore(zk)
    for rev in revs.order:
        canary = store.get("p1", rev)
        others = [store.get(p, rev) for p in ("p2", "p3")]
        if canary is None or any(o is None or (o.started_at or 0) < (canary.finished_at or 0)
                                 for o in others):
            raise DemoFailed(f"{rev} started on another pod before the canary p1 finished it")
    feeder.join(timeout=ROLLOUT_ORDERS * ROLLOUT_ENQUEUE_EVERY_S + 10)
    want = before + done[0]
    secs = wait_rows(engines, want, [])
    print(f"\n  all {done[0]} orders enqueued during the rollout were written ({want} rows in all, "
          f"{secs:.1f} s after the last enqueue); the canary finished each revision first")
    for pod, engine in engines.items():
        with engine.connect() as conn:
            missing = conn.execute(sqlalchemy.text(
                "SELECT COUNT(*) FROM orders WHERE total_cents IS NULL AND placed_at < :t"),
                {"t": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0))}).scalar_one()
        if missing:
            raise DemoFailed(f"{pod}: {missing} orders from before the rollout have no total_cents")
    print(f"  every order placed before the rollout has total_cents = order_no * "
          f"{app.PRICE_CENTS} (the 0002 backfill)")
    reconcile_report(engines)


def reconcile_report(engines: dict[str, sqlalchemy.Engine], timeout: float = 15.0) -> None:
    """Wait for one reconciliation run per pod after now and print what it found."""
    since = time.time()
    print(f"\n  the periodic job demo.reconcile ('{RECONCILE_CRON}', per pod) checks each shard:")
    deadline = time.monotonic() + timeout
    for pod, engine in engines.items():
        while True:
            with engine.connect() as conn:
                has = sqlalchemy.inspect(conn).has_table("reconcile_reports")
                row = conn.execute(sqlalchemy.text(
                    "SELECT tick, problems, details FROM reconcile_reports WHERE tick >= :t "
                    "ORDER BY id DESC LIMIT 1"), {"t": since}).first() if has else None
            if row is not None:
                break
            if time.monotonic() > deadline:
                raise DemoFailed(f"no reconciliation report from {pod} within {timeout:.0f} s")
            time.sleep(0.2)
        tick, problems, details = row
        print(f"    {pod}: tick {time.strftime('%H:%M:%S', time.gmtime(tick))} UTC, "
              f"{problems} problem(s)" + (f": {details[:200]}" if problems else " (consistent)"))


def stop_workers(workers: list[subprocess.Popen[bytes]], kind: str = "worker") -> bool:
    """SIGTERM every worker (or scheduler), wait; True if all exited 0 on their own."""
    clean = True
    t0 = time.monotonic()
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            rc = w.wait(20)
            print(f"  {kind} pid {w.pid}: exit {rc} after SIGTERM ({time.monotonic() - t0:.1f} s)")
            clean = clean and rc == 0
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait(5)
            print(f"  {kind} pid {w.pid}: did not stop within 20 s of SIGTERM; killed")
            clean = False
    return clean


def print_log_tails(tmp: Path) -> None:
    """The end of every server and worker log under the demo's temp dir."""
    heading(f"log tails (last {LOG_TAIL_LINES} lines)")
    paths = sorted(p for p in tmp.rglob("*.log") if "data" not in p.relative_to(tmp).parts)
    if not paths:
        print("(no logs were written)")
    for path in paths:
        print(f"--- {path.relative_to(tmp)}")
        with contextlib.suppress(OSError):
            lines = path.read_text(errors="replace").splitlines()
            print("\n".join(lines[-LOG_TAIL_LINES:]) or "(empty)")


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: the teardown runs now
    raise KeyboardInterrupt(f"got {signal.Signals(signum).name}")


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGTERM, _on_sigterm)
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="podjobs-demo-"))
    cluster = Cluster(tmp / "cluster", die_with_parent=True)
    workers: list[subprocess.Popen[bytes]] = []
    schedulers: list[subprocess.Popen[bytes]] = []
    os.environ["PODJOBS_DEMO_RECONCILE_CRON"] = RECONCILE_CRON
    zk: ZK | None = None
    pod_client: PodClient | None = None
    engines: dict[str, sqlalchemy.Engine] = {}
    ok = False
    try:
        heading(f"cluster: {N_PODS} pods, MariaDB shards, in {tmp}")
        t = time.monotonic()
        topology = cluster.up(N_PODS, db="mysql", timeout=60)
        print(f"started in {time.monotonic() - t:.1f} s\n")
        print(format_topology(topology))

        heading("checks")
        check_servers(topology)

        p1 = topology.pod("p1")
        url = p1.redis_url
        r = redis.Redis.from_url(url)
        podjobs.configure(url)
        ins = Inspector(RedisBackend(url))

        heading(f"single pod: workload on p1 ({url})")
        expect = enqueue_workload()

        heading(f"{N_WORKERS} workers: podjobs worker --redis URL --queues {QUEUES} --concurrency 4")
        for i in range(1, N_WORKERS + 1):
            workers.append(spawn_worker(["--redis", url], url, tmp / f"worker-{i}.log"))
        print("  pids " + ", ".join(str(w.pid) for w in workers) + f"; logs in {tmp}/worker-N.log")
        secs = wait_settled(r, ins, expect, workers)
        print(f"  all settled {secs:.1f} s after the workers were spawned")

        report(r, ins, expect, url)
        r.close()
        print(f"\nstopping the {N_WORKERS} single-pod workers (the pod workers take over p1):")
        if not stop_workers(workers):
            raise DemoFailed("a single-pod worker did not exit 0 on SIGTERM")
        workers.clear()

        spec = f"{topology.zookeeper}{ZK_ROOT}"
        heading(f"tenants on {N_PODS} pods (ZooKeeper {spec})")
        zk = ZK(topology.zookeeper, ZK_ROOT).start()
        engines.update((p.name, sqlalchemy.create_engine(p.shard_url)) for p in topology.pods)
        plan, pod_client = setup_tenants(topology, zk, engines, spec)
        refuse_unknown_tenant(topology)
        n_orders = enqueue_orders(topology, plan)

        heading(f"{N_PODS} pod workers: podjobs worker --pod pN --zk {spec}")
        pids = {}
        for name in topology.pod_names:
            w = spawn_worker(["--pod", name, "--zk", spec], url, tmp / f"worker-{name}.log")
            workers.append(w)
            pids[name] = w.pid
        print("  " + ", ".join(f"{n} pid {p}" for n, p in pids.items())
              + f"; logs in {tmp}/worker-pN.log")
        secs = wait_rows(engines, n_orders, workers)
        print(f"  all {n_orders} order rows written {secs:.1f} s after the workers were spawned")
        wait_fleet(zk, topology.pod_names)
        run_cli(["tenants", "list", "--zk", spec])
        run_cli(["fleet", "--zk", spec])
        report_tenants(topology, engines, plan, pids)
        backfill_section(topology, engines, spec, workers,
                         workers[topology.pod_names.index(BACKFILL_POD)], tmp)
        migrations_section(topology, engines, spec, zk, plan, schedulers, tmp)
        ok = True
    except KeyboardInterrupt as exc:
        print(f"\ndemo interrupted ({exc or 'Ctrl-C'})")
    except Exception as exc:
        print(f"\ndemo FAILED: {type(exc).__name__}: {exc}")
    finally:
        # from here on, SIGTERM/Ctrl-C must not cut the (bounded) teardown short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not ok:
            print_log_tails(tmp)
        heading("teardown")
        try:
            ok = stop_workers(schedulers, "scheduler") and ok
            ok = stop_workers(workers) and ok
            # ZooKeeper sessions and shard connections go before their servers do
            if pod_client is not None:
                pod_client.close()
            if zk is not None:
                zk.stop()
            for engine in engines.values():
                engine.dispose()
            stopped = cluster.down(timeout=10)
            names = ", ".join(f"{s.kind} {s.name}" for s in stopped) or "none was running"
            print(f"  cluster down: stopped {len(stopped)} servers ({names})")
        except Exception as exc:
            print(f"  teardown FAILED: {type(exc).__name__}: {exc}")
            ok = False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"  removed {tmp}")
    print(f"\ndemo {'OK' if ok else 'FAILED'} in {time.monotonic() - t_start:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
