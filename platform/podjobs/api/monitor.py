"""The pure half of the HTTP API: requests in, answers out, no I/O.

1. `parse_enqueue(body)`: the JSON body of `POST /v1/tenants/{tenant}/jobs` checked into an
   `EnqueueRequest` (`BadRequest` for malformed JSON: 400; `Unprocessable`: 422, also for
   values JSON parses but a payload cannot carry: a number beyond a float's range such as
   1e400, a lone surrogate such as "\\ud800").
2. `parse_demand(expect, prefer, ...)`: what the caller asks with `Expect` and `Prefer`:
   asynchronous (202 at once), synchronous (the final answer within N seconds, else 417),
   or "async, but wait up to N seconds first" (RFC 7240 respond-async + wait).
3. `job_view(...)`: a status record (and an iteration job's progress) as the JSON document
   the monitor shows; `monitor_answer(view)` and `final_answer(view, demand)` pick the
   status code and headers (303 / 201 to a declared resource).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from podjobs.ids import ID_LENGTH

#: the states a monitor shows (the record's states, plus `paused` for an iteration job)
STATES = ("queued", "running", "retrying", "succeeded", "failed", "dead", "cancelled", "paused")
FINAL_STATES = frozenset({"succeeded", "failed", "dead", "cancelled"})
#: queue names the API accepts (a job's own queue may be anything the core allows)
QUEUE_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_ID_RE = re.compile(rf"[0-9A-HJKMNP-TV-Z]{{{ID_LENGTH}}}")
#: longest delay accepted (366 days)
MAX_DELAY_S = 366 * 24 * 3600.0
MAX_JOB_NAME = 200


def monitor_path(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def valid_job_id(job_id: str) -> bool:
    """A podjobs job id (26 characters of Crockford base32, upper case)."""
    return bool(_ID_RE.fullmatch(job_id))


# -- the enqueue body --------------------------------------------------------------------


class BadRequest(Exception):
    """400: the body is not JSON."""


class Unprocessable(Exception):
    """422: JSON, but not a request podjobs can enqueue; `errors` point at the fields."""

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


@dataclass(frozen=True)
class EnqueueRequest:
    job: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    #: seconds from now (Redis' clock) before the job is due; None: now
    delay: float | None = None


_FIELDS = frozenset({"job", "args", "kwargs", "queue", "delay"})


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _Overflow(float):
    """A JSON number too large for a float (it parses as infinity); keeps its text."""

    text: str


def _parse_float(literal: str) -> float:
    v = float(literal)
    if math.isfinite(v):
        return v
    big = _Overflow(v)
    big.text = literal
    return big


def _utf8(s: str) -> bool:
    """False when `s` holds a lone UTF-16 surrogate (JSON's "\\ud800"), which UTF-8 cannot carry."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: most value errors reported for one body
_MAX_VALUE_ERRORS = 5


def _value_errors(data: Any) -> list[dict[str, Any]]:
    """Values JSON parses but a job payload cannot carry: numbers out of a float's range and
    strings (or keys) with a lone surrogate; each error names its place and its value."""
    errors: list[dict[str, Any]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [(("body",), data)]
    while stack and len(errors) < _MAX_VALUE_ERRORS:
        loc, v = stack.pop()
        t = type(v)
        if t is str:
            if not _utf8(v):
                errors.append({"loc": list(loc), "msg": f"the string {_short(v)} holds a lone "
                               f"UTF-16 surrogate, which UTF-8 cannot carry"})
        elif t is _Overflow or (t is float and not math.isfinite(v)):
            text = getattr(v, "text", repr(v))
            errors.append({"loc": list(loc), "msg": f"the number {text[:40]} is not a finite "
                           f"number (out of a 64-bit float's range)"})
        elif t is list:
            stack.extend((loc + (i,), x) for i, x in reversed(list(enumerate(v))))
        elif t is dict:
            for k, x in reversed(list(v.items())):
                if not _utf8(k):
                    errors.append({"loc": list(loc), "msg": f"the key {_short(k)} holds a lone "
                                   f"UTF-16 surrogate, which UTF-8 cannot carry"})
                else:
                    stack.append((loc + (k,), x))
    return errors


def _short(s: str) -> str:
    r = ascii(s)
    return r if len(r) <= 60 else r[:57] + "..."


def parse_enqueue(body: bytes) -> EnqueueRequest:
    """The enqueue request in `body` (see the module doc for the errors)."""
    try:
        data = json.loads(body, parse_constant=_no_constants, parse_float=_parse_float)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadRequest(f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise Unprocessable(f"the body must be a JSON object, not {_json_type(data)}",
                            [{"loc": ["body"], "msg": "expected an object"}])
    errors = _value_errors(data)
    if errors:
        raise Unprocessable("; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'body'}: {e['msg']}"
                                      for e in errors), errors)
    for k in sorted(set(data) - _FIELDS):
        errors.append({"loc": ["body", k], "msg": "unknown field; allowed: args, delay, job, kwargs, queue"})
    job = data.get("job")
    if not isinstance(job, str) or not 0 < len(job) <= MAX_JOB_NAME:
        errors.append({"loc": ["body", "job"],
                       "msg": f"required: the job's name, a string of 1-{MAX_JOB_NAME} characters"})
    args = data.get("args", [])
    if not isinstance(args, list):
        errors.append({"loc": ["body", "args"], "msg": f"must be an array, not {_json_type(args)}"})
    kwargs = data.get("kwargs", {})
    if not isinstance(kwargs, dict):
        errors.append({"loc": ["body", "kwargs"], "msg": f"must be an object, not {_json_type(kwargs)}"})
    queue = data.get("queue")
    if queue is not None and (not isinstance(queue, str) or not QUEUE_RE.fullmatch(queue)):
        errors.append({"loc": ["body", "queue"],
                       "msg": "must be 1-128 characters of letters, digits, '.', '_' and '-'"})
    delay = data.get("delay")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int | float)
                              or not 0 <= delay <= MAX_DELAY_S):
        errors.append({"loc": ["body", "delay"],
                       "msg": f"must be a number of seconds from 0 to {MAX_DELAY_S:.0f}"})
    if errors:
        raise Unprocessable("; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'body'}: {e['msg']}"
                                      for e in errors), errors)
    return EnqueueRequest(str(job), list(args), dict(kwargs), queue,
                          float(delay) if delay is not None else None)


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(v), "a number")


# -- Expect and Prefer ---------------------------------------------------------------------


class Mode(StrEnum):
    #: 202 Accepted at once
    ASYNC = "async"
    #: the final answer within `wait_s`, else 417
    SYNC = "sync"
    #: the final answer if the job finishes within `wait_s`, else 202 (Prefer: respond-async, wait=N)
    WAIT_THEN_ASYNC = "wait-then-async"


@dataclass(frozen=True)
class Demand:
    mode: Mode
    #: seconds the server waits (already capped at its maximum)
    wait_s: float = 0.0
    #: the wait the caller asked for with Prefer (for Preference-Applied), if any
    prefer_wait: float | None = None
    #: the caller named 204 in Expect: a success without a body answers 204
    no_content: bool = False
    #: set: answer 417 with this reason before anything is written
    refusal: str | None = None


_SYNC_EXPECT = {"200": "200-ok", "201": "201-created", "204": "204-no-content"}


def _expectations(expect: str) -> list[str]:
    return [e.strip().lower() for e in expect.split(",") if e.strip()]


def parse_demand(expect: str | None, prefer: str | None, *, default_wait_s: float,
                 max_wait_s: float) -> Demand:
    """What `Expect` and `Prefer` ask for (see the README's "HTTP API" for the table).

    - `Expect: 202-accepted`: asynchronous only (Prefer is then ignored);
    - `Expect: 200-ok | 201-created | 204-no-content` (or the bare code): synchronous, within
      Prefer's wait or `default_wait_s`;
    - `Prefer: wait=N` alone: synchronous within N seconds;
    - `Prefer: respond-async, wait=N`: wait up to N seconds, then 202 if not finished;
    - any other expectation (except 100-continue, which the HTTP server handles): 417.
    Waits are capped at `max_wait_s`."""
    want_async = want_sync = no_content = False
    unknown: list[str] = []
    for e in _expectations(expect or ""):
        code = e.split("-", 1)[0]
        if e == "100-continue":
            continue
        if code == "202" and e in ("202", "202-accepted"):
            want_async = True
        elif code in _SYNC_EXPECT and e in (code, _SYNC_EXPECT[code]):
            want_sync = True
            no_content = no_content or code == "204"
        else:
            unknown.append(e)
    if unknown:
        return Demand(Mode.ASYNC, refusal=f"unsupported expectation {unknown[0]!r}; this server "
                      f"understands 202-accepted, 200-ok, 201-created and 204-no-content")
    if want_async and want_sync:
        return Demand(Mode.ASYNC, refusal="Expect asks for both an asynchronous (202) and a "
                                          "synchronous (200/201/204) answer")
    wait, respond_async = _preferences(prefer or "")
    if want_async:
        return Demand(Mode.ASYNC)
    if want_sync or (wait is not None and not respond_async):
        asked = wait if wait is not None else default_wait_s
        if asked <= 0:
            return Demand(Mode.SYNC, refusal="a synchronous answer within 0 seconds cannot be given")
        return Demand(Mode.SYNC, min(asked, max_wait_s), wait, no_content)
    if respond_async and wait:
        return Demand(Mode.WAIT_THEN_ASYNC, min(wait, max_wait_s), wait)
    return Demand(Mode.ASYNC)


def _preferences(prefer: str) -> tuple[float | None, bool]:
    """(wait seconds, respond-async) from a Prefer header (RFC 7240; others ignored)."""
    wait: float | None = None
    respond_async = False
    for item in prefer.split(","):
        pref = item.split(";", 1)[0].strip()
        name, _, value = pref.partition("=")
        name = name.strip().lower()
        value = value.strip().strip('"')
        if name == "respond-async":
            respond_async = True
        elif name == "wait" and value:
            try:
                w = float(value)
            except ValueError:
                continue
            if math.isfinite(w) and w >= 0:
                wait = w
    return wait, respond_async


# -- the status document -------------------------------------------------------------------


def iso(ms: str | int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds; None for nothing."""
    try:
        v = int(ms) if ms is not None and ms != "" else 0
    except (TypeError, ValueError):
        return None
    if v <= 0:
        return None
    return datetime.fromtimestamp(v / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int(v: str | None, default: int | None = 0) -> int | None:
    try:
        return int(v) if v is not None and v != "" else default
    except (TypeError, ValueError):
        return default


def _json(v: str | None) -> Any:
    if not v:
        return None
    try:
        return json.loads(v)
    except ValueError:
        return v


def job_view(job_id: str, rec: Mapping[str, str], progress: Mapping[str, Any] | None = None,
             worker_alive: bool | None = None) -> dict[str, Any]:
    """The monitor's JSON document for a status record.

    `progress`: an iteration job's progress (its `pj:iter` hash as `Progress.as_dict()`);
    `worker_alive`: False when the record says running but its worker's heartbeat is gone
    (the job went back to its queue, or will once the worker is reaped: shown as queued)."""
    state = rec.get("state") or "queued"
    reason = rec.get("reason") or None
    if state == "running" and worker_alive is False:
        state, reason = "queued", "recovered"
    if progress is not None:
        it = str(progress.get("state", ""))
        if it == "cancelled" and state not in ("failed", "dead"):
            state, reason = "cancelled", "cancelled"
        elif it == "paused" and state in ("queued", "succeeded", "running"):
            state, reason = "paused", "paused"
    err = _json(rec.get("error"))
    view: dict[str, Any] = {
        "id": job_id,
        "job": rec.get("job", ""),
        "tenant": rec.get("tenant") or None,
        "queue": rec.get("queue", ""),
        "state": state,
        "attempts": _int(rec.get("attempts")),
        "max_attempts": _int(rec.get("max_attempts"), None),
        "enqueued_at": iso(rec.get("enqueued_ms")),
        "run_at": iso(rec.get("run_at_ms")) if state in ("queued", "retrying") else None,
        "started_at": iso(rec.get("started_ms")),
        "finished_at": iso(rec.get("finished_ms")) if state in FINAL_STATES else None,
        "updated_at": iso(rec.get("updated_ms")),
        "reason": reason,
        "error": err if isinstance(err, dict) else None,
        "location": (rec.get("location") or None) if state == "succeeded" else None,
        "result": _json(rec.get("result")) if state == "succeeded" else None,
        "progress": progress_view(progress) if progress is not None else None,
        "monitor": monitor_path(job_id),
    }
    return view


_PROGRESS_KEYS = ("state", "done", "total", "percent", "rate", "eta_s", "runs", "interrupted",
                  "elapsed_s", "reason", "cursor")


def progress_view(p: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: p.get(k) for k in _PROGRESS_KEYS}
    for k in ("rate", "eta_s", "percent", "elapsed_s"):
        v = out.get(k)
        if isinstance(v, float):
            out[k] = round(v, 3) if math.isfinite(v) else None
    return out


def queued_view(job_id: str, job: str, tenant: str, queue: str, max_attempts: int,
                now_ms: int, run_at_ms: int | None) -> dict[str, Any]:
    """The document of a job just enqueued (built without reading it back)."""
    rec = {"state": "queued", "job": job, "tenant": tenant, "queue": queue, "attempts": "0",
           "max_attempts": str(max_attempts), "enqueued_ms": str(now_ms),
           "run_at_ms": str(run_at_ms or now_ms), "updated_ms": str(now_ms)}
    return job_view(job_id, rec)


# -- answers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any] | None


def monitor_answer(view: dict[str, Any]) -> Answer:
    """GET /v1/jobs/{id}: 303 See Other to the resource a succeeded job declared, else 200."""
    if view["state"] == "succeeded" and view.get("location"):
        return Answer(303, {"Location": view["location"]}, view)
    return Answer(200, {}, view)


def accepted_answer(view: dict[str, Any]) -> Answer:
    """202 Accepted with the status monitor in Location."""
    return Answer(202, {"Location": view["monitor"]}, view)


def final_answer(view: dict[str, Any], demand: Demand) -> Answer:
    """The synchronous answer for a finished job: 201 Created with Location when it declared
    a resource, 204 for a bodiless success the caller expected, else 200 with the document
    (a failed, dead or cancelled job's document carries its error)."""
    headers = {"Content-Location": view["monitor"]}
    if demand.prefer_wait is not None:
        headers["Preference-Applied"] = f"wait={_num(demand.prefer_wait)}"
    if view["state"] == "succeeded":
        if view.get("location"):
            return Answer(201, {**headers, "Location": view["location"]}, view)
        if demand.no_content and view.get("result") is None:
            return Answer(204, headers, None)
    return Answer(200, headers, view)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def refusal(jd_async_only: bool, delay: float | None, demand: Demand) -> str | None:
    """Why the demand cannot be met, known before anything is written (None: it may be)."""
    if demand.refusal:
        return demand.refusal
    if demand.mode is not Mode.SYNC:
        return None
    if jd_async_only:
        return "this job type runs asynchronously only; send Expect: 202-accepted (or no Expect)"
    if delay is not None and delay >= demand.wait_s:
        return (f"a job delayed by {_num(delay)} s cannot finish within the {_num(demand.wait_s)} s "
                f"the server waits")
    return None
