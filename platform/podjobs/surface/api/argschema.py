"""Per-job argument schemas: what the OpenAPI document says each api-callable job takes, and
the 422 that names the argument when a body does not fit it.

`for_job(jd)` reads the function's signature and annotations (the ctx parameter left out;
an annotation pydantic cannot describe, or cannot resolve, is taken as any JSON value) and
builds a pydantic model of the arguments (strict: no "1" for an int; validated as JSON, so a
`datetime` takes its ISO string). `ArgSchema.body_schema()` is the job's part of the enqueue
body's schema: one variant per number of positional arguments (`args` holds the first k
parameters, `kwargs` the required rest), so exactly the bodies that bind to the function and
whose values fit the annotations are schema-valid. `ArgSchema.errors(args, kwargs)` checks
the values of arguments that bind (the arity is checked before: `JobDef.arguments_fit`).
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from podjobs.jobs import JobDef

P = inspect.Parameter
#: where a parameter's nested models and enums go in the OpenAPI document
REF_TEMPLATE = "#/components/schemas/{model}"
_POSITIONAL = (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True)
class Param:
    name: str
    kind: Any  # inspect's _ParameterKind
    annotation: Any
    schema: dict[str, Any]
    required: bool


@dataclass
class ArgSchema:
    """A job's arguments: their schemas, and the model that checks their values."""

    job: str
    signature: str
    params: list[Param]
    model: type[BaseModel]
    defs: dict[str, Any] = field(default_factory=dict)

    def body_schema(self) -> dict[str, Any]:
        """The job's variants of the enqueue body (see the module doc)."""
        pos = [p for p in self.params if p.kind in _POSITIONAL]
        var_pos = next((p for p in self.params if p.kind == P.VAR_POSITIONAL), None)
        var_kw = next((p for p in self.params if p.kind == P.VAR_KEYWORD), None)
        kw_only = [p for p in self.params if p.kind == P.KEYWORD_ONLY]
        variants = []
        for k in range(len(pos) + 1):
            if any(p.kind == P.POSITIONAL_ONLY and p.required for p in pos[k:]):
                continue  # a required positional-only parameter must be in args
            if any(p.kind == P.POSITIONAL_ONLY for p in pos[k + 1:]) and k < len(pos):
                continue  # positional-only ones after a gap cannot be given
            named = [p for p in pos[k:] if p.kind == P.POSITIONAL_OR_KEYWORD] + kw_only
            args: dict[str, Any] = {"type": "array", "minItems": k}
            if k:
                args["prefixItems"] = [p.schema for p in pos[:k]]
            if var_pos is not None and k == len(pos):
                args["items"] = var_pos.schema
            else:
                args["maxItems"] = k
            kwargs: dict[str, Any] = {"type": "object",
                                      "properties": {p.name: p.schema for p in named}}
            required = [p.name for p in named if p.required]
            if required:
                kwargs["required"] = required
            if var_kw is not None:
                kwargs["additionalProperties"] = var_kw.schema
                taken = [p.name for p in pos[:k]] + [p.name for p in pos if p.kind == P.POSITIONAL_ONLY]
                if taken:
                    kwargs["propertyNames"] = {"not": {"enum": sorted(set(taken))}}
            else:
                kwargs["additionalProperties"] = False
            need = (["args"] if k else []) + (["kwargs"] if required else [])
            v: dict[str, Any] = {"properties": {"args": args, "kwargs": kwargs}}
            if need:
                v["required"] = need
            variants.append(v)
        out: dict[str, Any] = {
            "title": f"{self.job} arguments",
            "description": f"{self.job}{self.signature}: positional arguments in `args` (in "
                           f"this order), the rest by name in `kwargs`",
            "properties": {"job": {"const": self.job}},
            "required": ["job"],
        }
        if len(variants) == 1:
            out["properties"].update(variants[0]["properties"])
            if variants[0].get("required"):
                out["required"] += variants[0]["required"]
        else:
            out["anyOf"] = variants
        return out

    def errors(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """[{"loc": ["body", "args", i] or ["body", "kwargs", name], "msg"}] for each value
        that does not fit its parameter's annotation (arguments that bind to the function)."""
        values: dict[str, Any] = {}
        where: dict[str, list[Any]] = {}
        i = 0
        for p in self.params:
            if p.kind in _POSITIONAL and i < len(args):
                values[p.name] = args[i]
                where[p.name] = ["body", "args", i]
                i += 1
            elif p.kind == P.VAR_POSITIONAL:
                values[p.name] = list(args[i:])
                where[p.name] = ["body", "args", ("+", i)]
                i = len(args)
            elif p.kind == P.VAR_KEYWORD:
                named = {x.name for x in self.params}
                values[p.name] = {k: v for k, v in kwargs.items() if k not in named}
                where[p.name] = ["body", "kwargs"]
            elif p.name in kwargs:
                values[p.name] = kwargs[p.name]
                where[p.name] = ["body", "kwargs", p.name]
        try:
            self.model.model_validate_json(json.dumps(values))
        except ValidationError as exc:
            out = []
            for e in exc.errors(include_url=False):
                name = str(e["loc"][0]) if e["loc"] else ""
                loc = list(where.get(name, ["body"]))
                rest = list(e["loc"][1:])
                if loc and isinstance(loc[-1], tuple):  # *args: the index inside it
                    base = loc.pop()[1]
                    loc.append(base + int(rest.pop(0)) if rest else base)
                elif loc == ["body", "kwargs"] and rest:  # **kwargs: the key
                    loc.append(rest.pop(0))
                out.append({"loc": loc + rest,
                            "msg": f"argument {name!r} of {self.job}: {e['msg']}"})
            return out
        return []


def _resolve(annotation: Any, namespace: dict[str, Any]) -> Any:
    """The annotation as a type (a string one evaluated in the function's module), else Any."""
    if annotation is P.empty:
        return Any
    if isinstance(annotation, str):
        try:
            return eval(annotation, namespace)  # noqa: S307 - the app's own annotation
        except Exception:
            return Any
    return annotation


def _namespace(jd: JobDef) -> dict[str, Any]:
    cls = getattr(jd, "job_class", None)
    if cls is not None:
        import sys

        return dict(vars(sys.modules[cls.__module__]))
    fn = inspect.unwrap(jd.fn)
    return dict(getattr(fn, "__globals__", {}))


def for_job(jd: JobDef) -> ArgSchema:
    """The argument schema of `jd` (see the module doc)."""
    sig = jd._signature
    params = list(sig.parameters.values())
    if jd.takes_ctx and params:
        params = params[1:]
    ns = _namespace(jd)
    ns.setdefault("typing", typing)
    out: list[Param] = []
    fields: dict[str, Any] = {}
    defs: dict[str, Any] = {}
    for p in params:
        ann = _resolve(p.annotation, ns)
        if p.kind == P.VAR_POSITIONAL:
            model_ann: Any = list[ann]  # type: ignore[valid-type]
        elif p.kind == P.VAR_KEYWORD:
            model_ann = dict[str, ann]  # type: ignore[valid-type]
        else:
            model_ann = ann
        try:
            schema = TypeAdapter(ann).json_schema(ref_template=REF_TEMPLATE)
            TypeAdapter(model_ann)
        except Exception:  # a type pydantic cannot describe: any JSON value
            ann = model_ann = Any
            schema = {}
        defs.update(schema.pop("$defs", {}))
        required = p.default is P.empty and p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)
        if p.default is not P.empty:
            try:
                schema = {**schema, "default": json.loads(json.dumps(p.default))}
            except (TypeError, ValueError):
                pass
        out.append(Param(p.name, p.kind, ann, schema, required))
        default = ... if required else (p.default if p.default is not P.empty else None)
        if p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD):
            default = [] if p.kind == P.VAR_POSITIONAL else {}
        # by alias: a parameter may be called like a BaseModel attribute (json, copy, ...)
        fields[f"a{len(fields)}"] = (model_ann, Field(default, alias=p.name))
    model = create_model(
        "Arguments", __config__=ConfigDict(strict=True, arbitrary_types_allowed=True), **fields)
    return ArgSchema(jd.name, _shown(params), out, model, defs)


class _Raw:
    """An annotation written as a string, shown as written (not quoted)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _shown(params: list[inspect.Parameter]) -> str:
    """"(a: int, b: float = 1.5)": the parameters a client passes (no ctx, no return)."""
    return str(inspect.Signature([p.replace(annotation=_Raw(p.annotation))
                                  if isinstance(p.annotation, str) else p for p in params]))
