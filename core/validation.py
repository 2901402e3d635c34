"""Turn pydantic validation errors into short messages that name the field, never echo the input."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter

_FRIENDLY = {
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "missing": "is required",
    "string_too_short": "must not be empty",
    "extra_forbidden": "unknown field; check its spelling",
    "finite_number": "must be a finite number",
}


def location(loc: tuple[Any, ...]) -> str:
    """``('providers', 1, 'priority')`` -> ``providers[1].priority``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def message(error: dict[str, Any]) -> str:
    """A short, input-free message for one pydantic error."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    for bound, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx and kind.startswith(("greater", "less")):
            return f"must be {word} {ctx[bound]}"
    if kind in _FRIENDLY:
        return _FRIENDLY[kind]
    msg = error["msg"]
    return msg[:1].lower() + msg[1:]


def problems(errors: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(field, message)`` for every error, in order."""
    return [(location(e["loc"]), message(e)) for e in errors]


def request_body_schema(body: type[BaseModel] | TypeAdapter) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its JSON body itself: the body's JSON schema
    (a model's, or a TypeAdapter's) with its ``$defs`` inlined, so the schema stands alone
    inside /openapi.json."""
    schema = body.json_schema() if isinstance(body, TypeAdapter) else body.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}
