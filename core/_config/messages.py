"""What a user is told about a bad setting: ``ConfigError``, and short messages for pydantic's
validation errors that name the field and never echo the input."""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """providers.yaml (or a setting) is invalid; the message says where and how to fix it."""


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
            limit = ctx[bound]
            if isinstance(limit, float) and limit.is_integer():
                limit = int(limit)  # pydantic may give a bound as 0.0 where the model says 0
            return f"must be {word} {limit}"
    if kind in _FRIENDLY:
        return _FRIENDLY[kind]
    msg = error["msg"]
    return msg[:1].lower() + msg[1:]


def problems(errors: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(field, message)`` for every error, in order."""
    return [(location(e["loc"]), message(e)) for e in errors]
