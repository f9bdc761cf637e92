"""Job payloads: JSON only, checked at enqueue, decoded safely in the worker.

The types a job argument may have (anything else is refused at enqueue):
None, bool, int, float (finite), str, list and tuple (a tuple arrives as a
list), and dict with str keys, nested to any depth. No pickle, ever.

A payload is a JSON object whose first member is always `"id"` with a
26-character id, so Lua can read the id without decoding the JSON. Members with their
default are left out to keep a queued job small: `kwargs` ({}) and `attempt` (0, the runs
before this one); readers take them with `.get(name, default)`.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from podjobs.delivery import Delivery
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
    """A payload in Redis that cannot be decoded into a job, or whose fields are not what
    podjobs writes: it goes to the dead set once (reason malformed), its raw text kept."""


#: optional payload members and the types they must have when present (bool is not an int)
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "queue": (str,), "enqueued_at": (int,), "attempt": (int,), "tenant": (str,),
    "pod": (str, type(None)), "unique": (str,), "track": (int,), "forwarded_from": (str, type(None)),
}


def decode(raw: bytes | str) -> dict[str, Any]:
    """Decode and check a payload from Redis: its own fields and those of every chained
    follow-up (`then`), before anything runs. Raise BadPayload naming the first field that
    is wrong."""
    try:
        data: dict[str, Any] = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPayload(f"payload is not valid JSON: {exc}") from None
    _check(data, "payload")
    if inflight_field(raw) != data["id"]:
        raise BadPayload(
            f"payload does not start with '{{\"id\":\"<26 letters or digits>\"' (id "
            f"{_short(data['id'])}); podjobs' client writes payloads that way: enqueue through it")
    return data


def open_delivery(raw: bytes | str, queue: str, owner: str) -> Delivery:
    """The typed `Delivery` of a payload reserved from `queue` by worker id `owner`, checked
    as `decode` checks it (raises BadPayload)."""
    return Delivery(decode(raw), raw, queue, owner)


def _check(data: Any, where: str) -> None:
    if type(data) is not dict:
        raise BadPayload(f"{where} is a JSON {type(data).__name__}, not an object")
    for name in ("id", "job"):
        if type(data.get(name)) is not str or not data[name]:
            raise BadPayload(f"{where} lacks a string {name!r} (got {_short(data.get(name))})")
    if type(data.get("args", [])) is not list or type(data.get("kwargs", {})) is not dict:
        raise BadPayload(f"{where} 'args' must be a list and 'kwargs' an object")
    for name, types in _OPTIONAL.items():
        if name in data and type(data[name]) not in types:
            raise BadPayload(f"{where} {name!r} is {_short(data[name])}, not "
                             f"{' or '.join('null' if t is type(None) else t.__name__ for t in types)}")
    if type(data.get("attempt", 0)) is int and data.get("attempt", 0) < 0:
        raise BadPayload(f"{where} 'attempt' is {data['attempt']}, below 0")
    if "then" in data:
        then = data["then"]
        if type(then) is not list:
            raise BadPayload(f"{where} 'then' is {_short(then)}, not a list of follow-up jobs")
        for i, child in enumerate(then):
            _check(child, f"{where} follow-up {i}")
            if "queue" not in child:
                raise BadPayload(f"{where} follow-up {i} lacks its 'queue'")


def inflight_field(raw: bytes | str) -> str:
    """The field reserve.lua files a payload under in a worker's in-flight hash: its id
    when the payload starts as podjobs writes it ('{"id":"<26 ASCII letters or digits>"'),
    else 'bad:' and the SHA-1 of its bytes (so that a malformed entry can still be found
    and settled, whatever its bytes)."""
    b = raw.encode() if isinstance(raw, str) else raw
    if b[:7] == b'{"id":"' and b[33:34] == b'"' and b[7:33].isalnum():
        return b[7:33].decode("ascii", "replace")
    return "bad:" + hashlib.sha1(b).hexdigest()
