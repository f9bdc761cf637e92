"""Jobs the HTTP API tests enqueue over HTTP (the API server imports this module with
--app, the in-process pod workers import it too).

With $PODJOBS_API_GHOST set (the API server only), `api.ghost` is registered as well: the
API accepts it, the workers do not know it, so it dies with `unknown_job`.
"""

from __future__ import annotations

import os
from typing import Any

import podjobs
from podjobs.context import Context
from podjobs.iteration import IterationJob, enumerators


@podjobs.job(name="api.add", retries=0, api={"queues": ["parked"]})
def add(a: int, b: int) -> int:
    return a + b


@podjobs.job(name="api.noop", retries=0, api={"queues": ["parked"]})
def noop() -> None:
    pass


@podjobs.job(name="api.create_thing", retries=0, api=True)
def create_thing(name: str) -> podjobs.Created:
    return podjobs.Created(f"/things/{name}")


@podjobs.job(name="api.create_dict", retries=0, api=True)
def create_dict(name: str) -> dict[str, Any]:
    return {"location": f"https://example.test/things/{name}", "name": name}


@podjobs.job(name="api.fail", retries=0, api=True)
def fail(message: str) -> None:
    raise RuntimeError(message)


@podjobs.job(name="api.fail_slowly", retries=1, backoff=podjobs.constant(1.0), api=True)
def fail_slowly(message: str) -> None:
    """Fails twice, one second apart: long enough to see it `retrying`."""
    raise ValueError(message)


@podjobs.job(name="api.slow", retries=0, api=True)
def slow(ctx: Context, seconds: float) -> str:
    ctx.stopping.wait(seconds)
    return "slept"


@podjobs.job(name="api.unique", retries=0, unique_for=60, api={"queues": ["parked"]})
def unique(key: str) -> None:
    pass


@podjobs.job(name="api.later_only", retries=0, async_only=True, api=True)
def later_only() -> None:
    pass


class Steps(IterationJob):
    """Items 0..n-1, `sleep` seconds each: an asynchronous-only job with progress."""

    job_name = "api.steps"
    retries = 0
    api = True
    checkpoint_every = 1

    def build_enumerator(self, ctx: Context, cursor: Any, *, n: int, sleep: float = 0.0) -> Any:
        return enumerators.int_range(0, n, cursor)

    def each_iteration(self, ctx: Context, i: int, *, n: int, sleep: float = 0.0) -> None:
        if sleep:
            ctx.stopping.wait(sleep)


# -- for the core's status-tracking tests (tests/test_api_tracking.py) ----------------------------


@podjobs.job(name="api.retry_later", retries=2, backoff=podjobs.constant(30), api=True)
def retry_later() -> None:
    raise RuntimeError("try again in 30 s")


@podjobs.job(name="api.put_back", retries=0)
def put_back() -> None:
    raise podjobs.Reenqueue(delay=60, reason="throttled")


@podjobs.job(name="api.once", retries=0, delivery="at_most_once")
def once(name: str) -> podjobs.Created:
    return podjobs.Created(f"/once/{name}")


if os.environ.get("PODJOBS_API_GHOST"):

    @podjobs.job(name="api.ghost", retries=0, api=True)
    def ghost() -> None:
        pass
