"""`Expect` and `Prefer`: what the caller of an enqueue asks for (pure, no I/O).

`parse_demand(expect, prefer, ...)` -> `Demand`: asynchronous (202 at once), synchronous
(the final answer within N seconds, else 417), or "async, but wait up to N seconds first"
(RFC 7240 respond-async + wait); `refusal(...)`: why a demand cannot be met, known
before anything is written (417). The table is in the README's "HTTP API".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


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


def refusal(jd_async_only: bool, delay: float | None, demand: Demand) -> str | None:
    """Why the demand cannot be met, known before anything is written (None: it may be)."""
    if demand.refusal:
        return demand.refusal
    if demand.mode is not Mode.SYNC:
        return None
    if jd_async_only:
        return "this job type runs asynchronously only; send Expect: 202-accepted (or no Expect)"
    if delay is not None and delay >= demand.wait_s:
        return (f"a job delayed by {fmt_seconds(delay)} s cannot finish within the {fmt_seconds(demand.wait_s)} s "
                f"the server waits")
    return None


def fmt_seconds(v: float) -> str:
    """A number of seconds as a header or message shows it (30, not 30.0)."""
    return str(int(v)) if float(v).is_integer() else f"{v:g}"
