"""A synchronous enqueue's wait (Expect: 200-ok|201-created|204-no-content, Prefer: wait=N).

`wait_answer(service, principal, view, pod, demand)` polls the job's status record with
`asyncio.sleep` between reads (2 ms growing to 50 ms), so a waiting request holds no
thread; then the final answer (201, 204 or 200), 202 for respond-async, or 417: a job
that had not started is cancelled, one that runs goes on with Location of its monitor.
Once the job is enqueued an error never answers as if nothing was (`_state_unknown`).
"""

import asyncio
import logging
from typing import Any

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from podjobs.surface.api.answers import accepted_answer, final_answer
from podjobs.surface.api.auth import Principal
from podjobs.surface.api.negotiation import Demand, Mode, fmt_seconds
from podjobs.surface.api.responses import answer, json_response
from podjobs.surface.api.service import ApiError, Service
from podjobs.surface.api.views import FINAL_STATES

log = logging.getLogger("podjobs.api")


async def wait_answer(service: Service, p: Principal, view: dict[str, Any], pod: str,
                      demand: Demand) -> Response:
    """The answer to a synchronous (or wait-then-async) enqueue, once the job finished or
    the wait ran out."""
    job_id = view["id"]
    try:
        final = await _wait_final(service, pod, job_id, demand.wait_s)
        if final is not None:
            return answer(final_answer(final, demand))
        if demand.mode is Mode.WAIT_THEN_ASYNC:  # the document as it is now, not at enqueue
            return _accepted_async(await run_in_threadpool(_current_view, service, p, view), demand)
        return await run_in_threadpool(_expectation_failed, service, p, job_id, demand)
    except Exception as exc:  # the job is enqueued: never answer as if nothing was
        log.warning("job %s is enqueued, but waiting for it failed: %s", job_id, exc)
        return _state_unknown(view, demand, exc)


def _current_view(service: Service, p: Principal, view: dict[str, Any]) -> dict[str, Any]:
    try:
        return service.find(p, view["id"]).view(view["id"])
    except Exception as exc:  # the job is enqueued: answer with what is known
        log.warning("job %s: current state unreadable after the wait: %s", view["id"], exc)
        return view


def _accepted_async(view: dict[str, Any], demand: Demand) -> Response:
    a = accepted_answer(view)
    applied = f"respond-async, wait={fmt_seconds(demand.wait_s)}"
    return json_response(a.status, a.body, {**a.headers, "Preference-Applied": applied})


def _state_unknown(view: dict[str, Any], demand: Demand, exc: Exception) -> Response:
    """The job was enqueued, then its state could not be read: 202 for respond-async,
    else 417; both with Location of its monitor (the caller must not enqueue it again)."""
    if demand.mode is Mode.WAIT_THEN_ASYNC:
        return _accepted_async(view, demand)
    why = exc.detail if isinstance(exc, ApiError) else f"{type(exc).__name__}: {exc}"
    return json_response(417, {
        "detail": f"the job was enqueued, but its state could not be read ({why[:200]}); it "
                  f"may run or have run: its status monitor is in Location. Do not enqueue it "
                  f"again", "job": view},
        {"Location": view["monitor"]})


async def _wait_final(service: Service, pod: str, job_id: str, timeout: float) -> dict[str, Any] | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.002
    while True:
        try:
            state = await run_in_threadpool(service.read_state, pod, job_id)
        except Exception as exc:  # keep waiting: the job is enqueued, the answer may come
            log.warning("waiting for job %s: %s", job_id, exc)
            state = ""
        if state in FINAL_STATES:
            return await run_in_threadpool(_final_view, service, job_id)
        left = deadline - loop.time()
        if left <= 0:
            return None
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 1.5, 0.05)


def _final_view(service: Service, job_id: str) -> dict[str, Any]:
    return service.find(Principal("api", operator=True), job_id).view(job_id)


def _expectation_failed(service: Service, p: Principal, job_id: str, demand: Demand) -> Response:
    """The job did not finish in time: cancel it if it has not started (then nothing
    runs), else say where its monitor is."""
    view = service.find(p, job_id).view(job_id)
    if view["state"] in FINAL_STATES:
        return answer(final_answer(view, demand))
    wait = f"{demand.wait_s:g}"
    if view["state"] == "queued":
        try:
            _, cancelled = service.cancel(p, job_id)
            return json_response(417, {
                "detail": f"the job did not start within {wait} s; it was cancelled and will "
                          f"not run. Retry later, or send Expect: 202-accepted",
                "job": cancelled})
        except ApiError as exc:
            if exc.status_code != 409:
                raise
            view = service.find(p, job_id).view(job_id)
            if view["state"] in FINAL_STATES:
                return answer(final_answer(view, demand))
    return json_response(417, {
        "detail": f"the job did not finish within {wait} s and goes on asynchronously; its "
                  f"status monitor is in Location", "job": view},
        {"Location": view["monitor"]})
