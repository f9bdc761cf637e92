"""The `--json` contract of the command line: one schema per noun, the same key names everywhere.

1. `NOUNS`: noun -> {key: allowed JSON types}. Every command declares the noun it prints
   (`Commands.command(..., noun=...)`); with `--json` a listing prints a JSON list of that
   noun's objects, a command about one thing (an action's result, a rollout, a wait) one
   object. Keys shared by nouns mean one thing: `pod` (a pod's name), `job_id`, `worker`
   (a worker's id), `queue`, `tenant`, `revision`; times are ISO 8601 in UTC with a `Z`
   (`started_at`, `at`, ...), durations are seconds (`*_s`); secrets never appear (URLs
   have their password replaced by `***`).
2. `iso(t)` (podjobs.table): epoch seconds (or milliseconds, `ms=True`) -> "2026-11-30T17:42:24.123Z".
3. `check(noun, value)`: the ways `value` (an object, or a list of objects) breaks the
   noun's schema, as messages (empty when it follows it). Pure: tested from tables, and
   used by the test that walks every command with `--json`.
"""

from __future__ import annotations

import re
from typing import Any

from podjobs.table import iso

__all__ = ["NOUNS", "TIME", "check", "iso", "redact"]

STR, INT, FLOAT, BOOL, NULL = str, int, float, bool, type(None)
LIST, OBJ = list, dict
NUM = (int, float)
#: a key ending in `_at` (or named `at`) holds an ISO 8601 UTC time or null
TIME = "time"

_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")

# noun -> key -> allowed types (a tuple), or TIME
NOUNS: dict[str, dict[str, Any]] = {
    "queue": {"pod": (STR, NULL), "queue": (STR,), "size": (INT,), "latency_s": NUM,
              "scheduled": (INT,), "retrying": (INT,), "in_flight": (INT,), "paused": (BOOL,)},
    "worker": {"pod": (STR, NULL), "worker": (STR,), "alive": (BOOL,), "host": (STR, NULL),
               "pid": (INT, NULL), "queues": (LIST,), "concurrency": (INT, NULL),
               "isolation": (STR, NULL), "started_at": TIME, "busy": (LIST,)},
    "stats": {"pod": (STR, NULL), "processed": (INT,), "failed": (INT,), "dead": (INT,),
              "recovered": (INT,)},
    "job": {"pod": (STR, NULL), "job_id": (STR, NULL), "job": (STR, NULL),
            "queue": (STR, NULL), "where": (STR,), "at": TIME, "attempt": (INT, NULL),
            "tenant": (STR, NULL), "reason": (STR, NULL), "error": (OBJ, NULL),
            "worker": (STR, NULL), "args": (LIST, NULL), "kwargs": (OBJ, NULL)},
    "action": {"action": (STR,), "count": (INT,), "changed": (LIST,), "message": (STR,)},
    "pod": {"pod": (STR,), "state": (STR,), "redis_url": (STR,), "shard_url": (STR,),
            "backend": (STR,)},
    "tenant": {"tenant": (STR,), "pod": (STR,), "state": (STR,), "move": (OBJ, NULL),
               "quota": (OBJ, NULL)},
    "quota_usage": {"tenant": (STR,), "pod": (STR, NULL), "rate": (FLOAT, NULL),
                    "burst": (INT, NULL), "tokens": (*NUM, NULL), "rate_used": (*NUM, NULL),
                    "pending": (INT,), "pending_cap": (INT, NULL), "pending_used": (*NUM, NULL),
                    "nearness": NUM},
    "quota": {"tenant": (STR, NULL), "pod": (STR, NULL), "quota": (OBJ,),
              "effective": (OBJ, NULL)},
    "iteration": {"pod": (STR, NULL), "job_id": (STR,), "job": (STR, NULL), "queue": (STR, NULL),
                  "state": (STR, NULL), "done": (INT, NULL), "total": (INT, NULL)},
    "rollout": {"leader": (OBJ, NULL), "order": (LIST,), "head": (STR, NULL),
                "halts": (OBJ,), "shards": (LIST,)},
    "wait": {"outcome": (STR,), "exit_code": (INT,), "revision": (STR, NULL),
             "message": (STR,), "reasons": (LIST,), "shards": (LIST,)},
    "scheduler": {"leader": (OBJ, NULL), "standing_by": (LIST,)},
    "cluster": {"dir": (STR,), "topology": (STR, NULL), "servers": (LIST,)},
    "move": {"tenant": (STR,), "pod": (STR,), "state": (STR,)},
    "token": {"token": (STR,), "entry": (OBJ,)},
}


def redact(url: str) -> str:
    """`url` with its password replaced by `***` (what listings and errors show)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@")).geturl()


def _check_one(noun: str, obj: Any, where: str) -> list[str]:
    schema = NOUNS[noun]
    if not isinstance(obj, dict):
        return [f"{where}: a {noun} must be an object, not {type(obj).__name__}"]
    errors = []
    for key, types in schema.items():
        if key not in obj:
            errors.append(f"{where}: {noun} has no key {key!r}")
            continue
        v = obj[key]
        if types == TIME:
            if v is not None and not (isinstance(v, str) and _ISO.match(v)):
                errors.append(f"{where}.{key}: {v!r} is not an ISO 8601 UTC time")
        elif isinstance(v, bool) and BOOL not in types:
            errors.append(f"{where}.{key}: {v!r} is a bool, expected {_names(types)}")
        elif not isinstance(v, types):
            errors.append(f"{where}.{key}: {v!r} is a {type(v).__name__}, expected {_names(types)}")
    errors += [e for key, v in obj.items() if key not in schema for e in _times(v, f"{where}.{key}",
                                                                              key)]
    return errors


def _times(v: Any, where: str, key: str) -> list[str]:
    """Time keys anywhere below: `at`, `*_at`, `since` must hold ISO 8601 UTC (or null)."""
    if isinstance(v, dict):
        return [e for k, x in v.items() for e in _times(x, f"{where}.{k}", k)]
    if isinstance(v, list):
        return [e for i, x in enumerate(v) for e in _times(x, f"{where}[{i}]", key)]
    if (key == "at" or key.endswith("_at") or key == "since") and v is not None \
            and not (isinstance(v, str) and _ISO.match(v)):
        return [f"{where}: {v!r} is not an ISO 8601 UTC time"]
    return []


def _names(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is NULL else t.__name__ for t in types)


def check(noun: str, value: Any) -> list[str]:
    """Messages for each way `value` breaks `noun`'s schema (see the module docstring)."""
    if noun not in NOUNS:
        return [f"no schema for noun {noun!r} (nouns: {', '.join(sorted(NOUNS))})"]
    if isinstance(value, list):
        return [e for i, item in enumerate(value) for e in _check_one(noun, item, f"[{i}]")]
    return _check_one(noun, value, "$")
