"""Plain aligned text tables for the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def render(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def one_line(text: str) -> str:
    """Text on one line: newlines and runs of spaces become one space (multi-line SQL
    errors, tracebacks) so a table or an error line stays whole."""
    return " ".join(str(text).split())


def duration(seconds: float) -> str:
    """Seconds for people: `42s`, `5m 12s`, `3h 04m`, `2d 05h`."""
    s = int(round(abs(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def ago(when: str | float | None, now: float | None = None) -> str:
    """An ISO 8601 time (or epoch seconds) relative to now: `5m 12s ago`, `in 30s`, `-`."""
    import time
    from datetime import datetime

    if when is None or when == "":
        return "-"
    if isinstance(when, str):
        try:
            t = datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return when
    else:
        t = float(when)
    delta = (time.time() if now is None else now) - t
    return f"{duration(delta)} ago" if delta >= 0 else f"in {duration(delta)}"


def iso(t: float | int | str | None, *, ms: bool = False) -> str | None:
    """Epoch seconds (milliseconds with `ms`) as ISO 8601 UTC; None and "" stay None, a
    string that is ISO already is returned as it is."""
    if t is None or t == "":
        return None
    if isinstance(t, str):
        try:
            num = float(t)
        except ValueError:
            return t
    else:
        num = float(t)
    secs = num / 1000 if ms else num
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


#: keys whose numbers are epoch seconds in documents made for people and pipelines
TIME_KEYS = ("since",)


def iso_times(obj: Any) -> Any:
    """A copy of a JSON-ready document whose times are ISO 8601 UTC: every number under a
    key named `at`, ending in `_at`, or in `TIME_KEYS` (epoch seconds) becomes a string."""
    if isinstance(obj, dict):
        return {k: iso(v) if (k == "at" or k.endswith("_at") or k in TIME_KEYS)
                and isinstance(v, int | float) and not isinstance(v, bool) and v > 0
                else iso_times(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [iso_times(v) for v in obj]
    return obj


def bar(done: int, total: int, width: int = 20) -> str:
    """A progress bar for a terminal: `[########------------] 2/5`."""
    filled = 0 if total <= 0 else min(width, round(width * done / total))
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}"


_COLOURS = {"red": "31", "green": "32", "yellow": "33", "bold": "1"}


def paint(text: str, colour: str, stream: Any) -> str:
    """`text` in `colour` when `stream` is a terminal and NO_COLOR is unset; else as it is."""
    import os

    isatty = getattr(stream, "isatty", None)
    if os.environ.get("NO_COLOR") or not (isatty and isatty()):
        return text
    return f"\033[{_COLOURS[colour]}m{text}\033[0m"
