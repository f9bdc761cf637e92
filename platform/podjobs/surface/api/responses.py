"""JSON responses of the API (compact, UTF-8) and the OpenAPI entry of an error answer."""

import json
from typing import Any

from fastapi.responses import Response

from podjobs.surface.api import models
from podjobs.surface.api.answers import Answer

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def problem(code: int, what: str) -> dict[str, Any]:
    """The OpenAPI `responses` entry of an error answer `code` (a `{"detail": ...}` body)."""
    return {"model": models.Problem, "description": what}


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    if body is None:
        return Response(status_code=status, headers=headers)
    return Response(_dumps(body), status_code=status, headers=headers, media_type="application/json")


def answer(a: Answer) -> Response:
    return json_response(a.status, a.body, a.headers)
