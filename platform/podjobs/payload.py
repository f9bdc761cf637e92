"""Job payloads: JSON only, checked at enqueue, decoded safely in the worker.

The types a job argument may have (anything else is refused at enqueue):
None, bool, int, float (finite), str, list and tuple (a tuple arrives as a
list), and dict with str keys, nested to any depth. No pickle, ever.

A payload is a JSON object whose first member is always `"id"` with a
26-character id, so Lua can read the id without decoding the JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

from podjobs.errors import PayloadError, PayloadTooLarge

#: largest encoded payload accepted at enqueue, in bytes (512 KiB)
DEFAULT_MAX_PAYLOAD_BYTES = 512 * 1024

_ALLOWED_DOC = (
    "allowed: None, bool, int, float (finite), str, list, tuple, dict with str keys; "
    "pass ids or ISO strings instead of objects"
)

_SCALARS = (str, int, bool, type(None))
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode
#: the compact JSON podjobs writes (no NaN, UTF-8 kept)
dumps = _dumps


def check_value(value: Any, where: str = "argument") -> None:
    """Raise PayloadError naming the first value that JSON cannot carry faithfully."""
    t = type(value)
    if t in _SCALARS:
        return
    if t is float:
        if not math.isfinite(value):
            raise PayloadError(f"{where} {value!r} is not a finite number; {_ALLOWED_DOC}")
        return
    if t is list or t is tuple:
        for i, item in enumerate(value):
            check_value(item, f"{where}[{i}]")
        return
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise PayloadError(
                    f"{where} has a dict key {k!r} of type {type(k).__name__}; "
                    f"JSON object keys must be str"
                )
            check_value(v, f"{where}[{k!r}]")
        return
    raise PayloadError(
        f"{where} {_short(value)} has type {t.__module__}.{t.__qualname__}, "
        f"which a JSON payload cannot carry; {_ALLOWED_DOC}"
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def encode(payload: dict[str, Any], max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """Encode a payload dict (whose first key must be "id") and enforce the size limit."""
    text: str = _dumps(payload)
    if len(text) > max_bytes // 4 and len(text.encode()) > max_bytes:
        raise PayloadTooLarge(
            f"job {payload.get('job')!r} payload is {len(text.encode())} bytes, over the "
            f"limit of {max_bytes} bytes; nothing was enqueued. Store large data elsewhere "
            f"(a table, object storage) and pass its id"
        )
    return text


class BadPayload(Exception):
    """A payload in Redis that cannot be decoded into a job; it goes to the dead set."""


def decode(raw: bytes | str) -> dict[str, Any]:
    """Decode a payload from Redis; raise BadPayload with the reason."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPayload(f"payload is not valid JSON: {exc}") from None
    if type(data) is not dict:
        raise BadPayload(f"payload is a JSON {type(data).__name__}, not an object")
    if type(data.get("id")) is not str or type(data.get("job")) is not str:
        raise BadPayload("payload lacks a string 'id' or 'job'")
    if type(data.get("args", [])) is not list or type(data.get("kwargs", {})) is not dict:
        raise BadPayload("payload 'args' must be a list and 'kwargs' an object")
    return data
