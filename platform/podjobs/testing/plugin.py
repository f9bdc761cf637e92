"""The pytest plugin of `podjobs.testing` (registered by the `pytest11` entry point, so it
loads wherever podjobs is installed; `-p no:podjobs` turns it off).

Fixtures:

- `podjobs_inline`: a `Jobs` in inline mode for the test (jobs run at enqueue);
- `podjobs_fake`: a `Jobs` in fake mode (enqueues captured; `assert_enqueued`, `drain`);
- `podjobs_redis_server` (session): a private redis-server (`.address`, `.port`);
- `podjobs_redis`: that server's URL, flushed, made the process-wide client for the test;
- `podjobs_zookeeper` (session): a private ZooKeeper, its "127.0.0.1:PORT".

The ini option `podjobs_mode = inline` (or `fake`) puts every test of the suite in that
mode; a test that asks for another mode's fixture gets that one inside.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .harness import Jobs

MODES = ("", "inline", "fake")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("podjobs_mode", "run every test with podjobs in this testing mode: "
                  "inline (jobs run at enqueue) or fake (enqueues captured)", default="")


def pytest_configure(config: pytest.Config) -> None:
    mode = str(config.getini("podjobs_mode")).strip()
    if mode not in MODES:
        raise pytest.UsageError(f"podjobs_mode = {mode!r} in the pytest configuration: "
                                f"use inline or fake (or leave it out)")


@pytest.fixture(autouse=True)
def _podjobs_mode(request: pytest.FixtureRequest) -> Iterator[None]:
    mode = str(request.config.getini("podjobs_mode")).strip()
    if not mode:
        yield
        return
    from .harness import fake, inline

    with (inline() if mode == "inline" else fake()):
        yield


@pytest.fixture
def podjobs_inline() -> Iterator[Jobs]:
    from .harness import inline

    with inline() as jobs:
        yield jobs


@pytest.fixture
def podjobs_fake() -> Iterator[Jobs]:
    from .harness import fake

    with fake() as jobs:
        yield jobs


@pytest.fixture(scope="session")
def podjobs_redis_server() -> Iterator[Any]:
    from .servers import private_redis

    with private_redis() as server:
        yield server


@pytest.fixture
def podjobs_redis(podjobs_redis_server: Any) -> Iterator[str]:
    from podjobs import client as client_mod
    from podjobs.backend import RedisBackend

    from .servers import flush

    url: str = podjobs_redis_server.address
    flush(url)
    mine = client_mod.Client(RedisBackend(url))
    with client_mod._lock:
        before, client_mod._default = client_mod._default, mine
    try:
        yield url
    finally:
        with client_mod._lock:
            client_mod._default = before
        mine.close()


@pytest.fixture(scope="session")
def podjobs_zookeeper() -> Iterator[str]:
    from .servers import private_zookeeper

    with private_zookeeper() as server:
        yield server.address
