"""Project-wide pytest setup: the real-server fixtures from tests/servers.py.

Fixtures (see servers.py for details):
- `cluster` (session): a `servers.TestServers`; `.topology` is the session's
  `Topology` (3 pods p1..p3, each with its own redis-server and a MariaDB
  database podjobs_pN on one private mariadbd; one ZooKeeper).
- `pods`: that `Topology`, after FLUSHALL on each pod Redis and dropping all
  tables in each shard.
- `redis_url`: pod p1's Redis URL (str), flushed.
- `zk_root`: a unique ZooKeeper path (str) like "/podjobs-test-<hex>", deleted after.
- `zk`: a started `podjobs.pods.zk.ZK` client on the session's ZooKeeper, rooted at `zk_root`.
Set PODJOBS_TEST_SERVERS=containers to use testcontainers instead of local processes.
A failing test that used the servers shows the last 40 lines of each server log.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from servers import (  # noqa: F401 - imported so pytest registers them
    _zk_admin,
    cluster,
    pods,
    pytest_runtest_makereport,
    redis_url,
    zk_root,
)

from podjobs.pods.zk import ZK
from tests.backends import Probe, make_probe, selected_kinds
from tests.chaos.runner import (  # noqa: F401 - the chaos table
    pytest_runtest_logreport,
    pytest_terminal_summary,
)


@pytest.fixture
def zk(cluster: Any, zk_root: str) -> Iterator[ZK]:  # noqa: F811 - the fixtures above, by name
    z = ZK(cluster.topology.zookeeper, zk_root)
    z.start(10)
    yield z
    z.stop()


@pytest.fixture(scope="session")
def pg() -> Iterator[tuple[Any, str]]:
    """A private PostgreSQL server for the session (skipped, saying why, where none can run)."""
    from tests.pgserver import PgServer, missing

    why = missing()
    if why:
        pytest.skip(f"PostgreSQL: {why}")
    server = PgServer()
    try:
        yield server, server.start()
    finally:
        server.stop()


@pytest.fixture(params=selected_kinds())
def probe(request: pytest.FixtureRequest, cluster: Any,  # noqa: F811 - the fixture, by name
          tmp_path: Any) -> Iterator[Probe]:
    """One queue backend per run (tests/backends.py `selected_kinds`: redis and sqlite unless
    $PODJOBS_TEST_BACKENDS says otherwise), emptied, with the process-wide client on it; the
    test apps record on pod p1's Redis (`probe.record_url`) on every kind."""
    import podjobs

    pg_ = request.getfixturevalue("pg") if request.param == "postgres" else None
    p = make_probe(request.param, cluster, tmp_path, pg_)
    client = podjobs.configure(client=podjobs.Client(p.backend()))
    try:
        yield p
    finally:
        client.close()
