"""The body of `POST /v1/tenants/{tenant}/jobs`, checked (pure, no I/O).

`parse_enqueue(body)` -> `EnqueueRequest`; `BadRequest` for malformed JSON (400),
`Unprocessable` (422) for JSON that is not a request podjobs can enqueue, also for values
JSON parses but a payload cannot carry: a number beyond a float's range such as 1e400, a
lone surrogate such as "\\ud800"; its `errors` point at the fields.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

#: queue names the API accepts (a job's own queue may be anything the core allows)
QUEUE_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: longest delay accepted (366 days)
MAX_DELAY_S = 366 * 24 * 3600.0
MAX_JOB_NAME = 200


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
