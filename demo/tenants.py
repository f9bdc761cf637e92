"""Section 3 of `make demo` (demo/run.py): tenants on 3 pods, routed by the directory;
which pod ran what, read back from each shard."""

from __future__ import annotations

import subprocess
import time

import redis
import sqlalchemy

import podjobs
from demo.common import QUEUES, WORKLOAD_TIMEOUT, DemoFailed, heading
from podjobs.fairshare import ready_count
from podjobs.infra.topofile import Topology
from podjobs.pods.registration import fleet
from podjobs.pods.router import PodClient
from podjobs.pods.topology import TopologyStore, register_topology
from podjobs.pods.zk import ZK
from podjobs.table import render

#: tenants shop-1..shop-N, round robin over the pods; shop-N places N orders
N_TENANTS = 12
UNKNOWN_TENANT = "shop-99"


def orders_of(tenant: str) -> int:
    """shop-N places N orders."""
    return int(tenant.rsplit("-", 1)[1])


def queued(topology: Topology) -> dict[str, int]:
    """Ready jobs per pod, over all demo queues."""
    out = {}
    for pod in topology.pods:
        r = redis.Redis.from_url(pod.redis_url)
        try:
            out[pod.name] = sum(int(ready_count(r, q)) for q in QUEUES.split(","))
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
