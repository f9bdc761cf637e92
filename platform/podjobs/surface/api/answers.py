"""Status codes and headers of the monitor and of synchronous enqueues (pure).

`monitor_answer(view)`: 303 See Other to a succeeded job's declared resource, else 200;
`accepted_answer(view)`: 202 with the monitor in Location; `final_answer(view, demand)`:
201 with Location, 204, or 200 with the document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .negotiation import Demand, fmt_seconds


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
    if demand.prefer_wait is not None:  # the wait applied: the server caps what was asked
        headers["Preference-Applied"] = f"wait={fmt_seconds(min(demand.prefer_wait, demand.wait_s))}"
    if view["state"] == "succeeded":
        if view.get("location"):
            return Answer(201, {**headers, "Location": view["location"]}, view)
        if demand.no_content and view.get("result") is None:
            return Answer(204, headers, None)
    return Answer(200, headers, view)
