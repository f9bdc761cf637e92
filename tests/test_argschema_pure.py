"""Per-job argument schemas (podjobs.surface.api.argschema), from tables: a body is valid by
the job's schema exactly when the server accepts its arguments, and a refusal names the
argument."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import jsonschema_rs
import pytest
from pydantic import BaseModel

import podjobs
from podjobs.context import Context
from podjobs.jobs import JobDef
from podjobs.surface.api.argschema import REF_TEMPLATE, for_job
from podjobs.surface.api.models import enqueue_body_schema


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    number: int


@podjobs.job(name="schema.add", api=True)
def add(a: int, b: float = 1.5) -> float:
    return a + b


@podjobs.job(name="schema.ctx", api=True)
def with_ctx(ctx: Context, name: str, *, tags: list[str] | None = None) -> None:
    pass


@podjobs.job(name="schema.rich", api=True)
def rich(when: datetime, color: Color, to: Address) -> None:
    pass


@podjobs.job(name="schema.loose", api=True)
def loose(x, *rest: int, **extra: str) -> None:  # type: ignore[no-untyped-def]
    pass


@podjobs.job(name="schema.posonly", api=True)
def posonly(a: int, /, b: int = 0) -> None:
    pass


def accepted(jd: JobDef, args: list[Any], kwargs: dict[str, Any]) -> bool:
    """What the server does: the arguments bind, then their values fit."""
    return jd.arguments_fit(args, kwargs) is None and not for_job(jd).errors(args, kwargs)


def schema_valid(jd: JobDef, body: dict[str, Any]) -> bool:
    s = for_job(jd)
    doc = {**enqueue_body_schema([jd.name], [s.body_schema()]),
           "$defs": s.defs}
    doc = _local_refs(doc)
    # formats (date-time) asserted, as a client that checks them would
    return bool(jsonschema_rs.validator_for(doc, validate_formats=True).is_valid(body))


def _local_refs(x: Any) -> Any:
    """The components refs pointed at the schema's own $defs (a standalone document)."""
    prefix = REF_TEMPLATE.split("{")[0]
    if isinstance(x, dict):
        return {k: (v.replace(prefix, "#/$defs/") if k == "$ref" else _local_refs(v))
                for k, v in x.items()}
    if isinstance(x, list):
        return [_local_refs(v) for v in x]
    return x


ADDR = {"street": "Main", "number": 3}
CASES: list[tuple[JobDef, list[Any], dict[str, Any]]] = [
    (add, [1], {}), (add, [1, 2], {}), (add, [1, 2.5], {}), (add, [], {"a": 1}),
    (add, [], {"a": 1, "b": 2}), (add, [1], {"b": 2}), (add, [], {}), (add, [1, 2, 3], {}),
    (add, ["1"], {}), (add, [1.5], {}), (add, [True], {}), (add, [1], {"a": 1}),
    (add, [1], {"c": 1}), (add, [None], {}), (add, [1], {"b": "x"}),
    (with_ctx, ["n"], {}), (with_ctx, [], {"name": "n", "tags": ["a"]}), (with_ctx, ["n", ["a"]], {}),
    (with_ctx, ["n"], {"tags": [1]}), (with_ctx, ["n"], {"tags": None}), (with_ctx, [], {}),
    (with_ctx, [None], {}),
    (rich, ["2026-01-02T03:04:05Z", "red", ADDR], {}), (rich, ["yesterday", "red", ADDR], {}),
    (rich, ["2026-01-02T03:04:05Z", "green", ADDR], {}),
    (rich, ["2026-01-02T03:04:05Z", "blue", {"street": "x"}], {}),
    (rich, [], {"when": "2026-01-02T03:04:05Z", "color": "blue", "to": ADDR}),
    (loose, [{"any": 1}], {}), (loose, [1, 2, 3], {"k": "v"}), (loose, [1, 2, "3"], {}),
    (loose, [1], {"k": 2}), (loose, [], {"x": 1}), (loose, [], {}), (loose, [1], {"x": 2}),
    (posonly, [1], {}), (posonly, [1, 2], {}), (posonly, [1], {"b": 2}), (posonly, [], {"a": 1}),
    (posonly, [], {}),
]


@pytest.mark.parametrize("jd, args, kwargs", CASES,
                         ids=[f"{jd.name}-{args!r}-{kwargs!r}" for jd, args, kwargs in CASES])
def test_the_schema_accepts_exactly_what_the_server_accepts(
        jd: JobDef, args: list[Any], kwargs: dict[str, Any]) -> None:
    body: dict[str, Any] = {"job": jd.name}
    if args:
        body["args"] = args
    if kwargs:
        body["kwargs"] = kwargs
    assert schema_valid(jd, body) == accepted(jd, args, kwargs)


def test_both_sides_accept_and_refuse_some() -> None:
    verdicts = {accepted(jd, a, k) for jd, a, k in CASES}
    assert verdicts == {True, False}


@pytest.mark.parametrize("jd, args, kwargs, loc, words", [
    (add, ["1"], {}, ["body", "args", 0], "argument 'a' of schema.add: Input should be a valid integer"),
    (add, [1], {"b": "x"}, ["body", "kwargs", "b"], "argument 'b'"),
    (with_ctx, ["n"], {"tags": [1]}, ["body", "kwargs", "tags", 0], "argument 'tags'"),
    (rich, ["2026-01-02T03:04:05Z", "blue", {"street": "x"}], {}, ["body", "args", 2, "number"],
     "argument 'to'"),
    (loose, [1, 2, "3"], {}, ["body", "args", 2], "argument 'rest'"),
    (loose, [1], {"k": 2}, ["body", "kwargs", "k"], "argument 'extra'"),
])
def test_a_value_that_does_not_fit_is_named_where_it_is(
        jd: JobDef, args: list[Any], kwargs: dict[str, Any], loc: list[Any], words: str) -> None:
    errors = for_job(jd).errors(args, kwargs)
    assert errors and errors[0]["loc"] == loc and words in errors[0]["msg"], errors


def test_the_document_shows_each_parameter_with_its_type_and_default() -> None:
    s = for_job(add).body_schema()
    assert s["title"] == "schema.add arguments" and "schema.add(a: int, b: float = 1.5)" in s["description"]
    variants = s["anyOf"]
    assert variants[2]["properties"]["args"]["prefixItems"] == [
        {"type": "integer"}, {"type": "number", "default": 1.5}]
    assert variants[0]["properties"]["kwargs"]["required"] == ["a"]
    ctx = for_job(with_ctx)
    assert [p.name for p in ctx.params] == ["name", "tags"]  # ctx is not an argument
    r = {p.name: p.schema for p in for_job(rich).params}
    assert r["when"] == {"type": "string", "format": "date-time"}
    assert r["color"]["enum"] == ["red", "blue"] and r["to"]["required"] == ["street", "number"]
    nested = for_job(podjobs.job(name="schema.nested", api=True)(_palette))
    assert set(nested.defs) == {"Color"}
    assert nested.params[0].schema["items"] == {"$ref": REF_TEMPLATE.format(model="Color")}


def _palette(colors: list[Color]) -> None:
    pass
