"""The top-level fields of a Responses API request: each read by its own reader, and each one
the gateway cannot honour refused by name rather than dropped.

``read_fields`` passes over the fields the body holds, not over every field the API has:
a request names a handful of them, and this runs on the event loop for every request.
Plain checks, no pydantic model: they are flat, and the nested ones (input items, tools)
are read where they are converted (``convert.py``). A field OpenAI's API does not have is
refused as OpenAI refuses it (``unknown_parameter``); null is read as absent, as there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelbroker import APIError
from modelbroker.plugins.responses.convert import chat_tool_choice, chat_tools, response_format
from modelbroker.plugins.responses.request import invalid

Reader = Callable[[Any, str], Any]

#: What ``include`` may ask for: the gateway never answers with reasoning items, so there is
#: no encrypted reasoning to include (Codex asks for it with reasoning models).
INCLUDABLE = frozenset({"reasoning.encrypted_content"})


def string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise invalid(name, "must be a string", "invalid_type")
    return value


def identifier(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise invalid(name, "must be a non-empty string", "invalid_type")
    return value


def boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(name, "must be true or false", "invalid_type")
    return value


def obj(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(name, "must be an object", "invalid_type")
    return value


def count(minimum: int) -> Reader:
    def read(value: Any, name: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise invalid(name, "must be an integer", "invalid_type")
        if value < minimum:
            raise invalid(name, f"must be at least {minimum}")
        return value
    return read


def number(low: float, high: float) -> Reader:
    def read(value: Any, name: str) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise invalid(name, "must be a number", "invalid_type")
        if not low <= value <= high:
            raise invalid(name, f"must be between {low:g} and {high:g}")
        return value
    return read


def unavailable(why: str) -> Reader:
    """A feature of OpenAI's own platform: refused unless false (or 0, or empty)."""
    def read(value: Any, name: str) -> Any:
        if value:
            raise invalid(name, why, "unsupported_parameter")
        return value
    return read


def as_given(value: Any, name: str) -> Any:
    """Read where it is converted (``input``), or of no consequence to a chat upstream."""
    return value


def top_logprobs(value: Any, name: str) -> int:
    if count(0)(value, name):
        raise invalid(name, "log probabilities are not available through the gateway's Responses API; "
                            "leave it out or set it to 0", "unsupported_parameter")
    return value


def truncation(value: Any, name: str) -> str:
    if value == "auto":
        raise invalid(name, "'auto' truncation is not available through the gateway: it cannot drop items from "
                            "a conversation the way OpenAI does; leave it out or use 'disabled'",
                      "unsupported_parameter")
    if value != "disabled":
        raise invalid(name, "must be auto or disabled")
    return value


def include(value: Any, name: str) -> list[str]:
    if not isinstance(value, list):
        raise invalid(name, "must be an array", "invalid_type")
    for index, asked in enumerate(value):
        if asked not in INCLUDABLE:
            raise invalid(f"{name}[{index}]", f"{asked!r} cannot be included by the gateway; it can include: "
                                              f"{', '.join(sorted(INCLUDABLE))}", "unsupported_parameter")
    return value


def metadata(value: Any, name: str) -> dict[str, str]:
    """Up to 16 string values under keys of up to 64 characters, as OpenAI's API allows."""
    if len(obj(value, name)) > 16:
        raise invalid(name, "may hold at most 16 keys")
    for key, text in value.items():
        if len(key) > 64 or not isinstance(text, str) or len(text) > 512:
            raise invalid(f"{name}.{key}", "keys are at most 64 characters and values strings of at most 512")
    return value


def reasoning(value: Any, name: str) -> dict[str, Any]:
    """``effort`` becomes chat's ``reasoning_effort``. A summary cannot be asked of a chat
    upstream; it is best-effort at OpenAI too, and none is given here."""
    effort = obj(value, name).get("effort")
    if effort is not None and not isinstance(effort, str):
        raise invalid(f"{name}.effort", "must be a string such as 'low', 'medium' or 'high'", "invalid_type")
    summary = value.get("summary", value.get("generate_summary"))
    return {"effort": effort, "summary": summary if isinstance(summary, str) else None}


def tools(value: Any, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return chat_tools(value)


def tool_choice(value: Any, name: str) -> tuple[Any, Any]:
    """Chat's form, and the choice as given (which a Response repeats)."""
    return chat_tool_choice(value), value


def text(value: Any, name: str) -> tuple[dict[str, Any] | None, str | None, dict[str, Any]]:
    """Chat's ``response_format``, the verbosity, and the field as a Response repeats it."""
    form = response_format(obj(value, name))
    verbosity = value.get("verbosity")
    if verbosity is not None and not isinstance(verbosity, str):
        raise invalid(f"{name}.verbosity", "must be low, medium or high", "invalid_type")
    echoed = {"format": value.get("format") or {"type": "text"}}
    if verbosity is not None:
        echoed["verbosity"] = verbosity
    return form, verbosity, echoed


READERS: dict[str, Reader] = {
    "model": identifier,
    "input": as_given,
    "instructions": string,
    "previous_response_id": identifier,
    "store": boolean,
    "stream": boolean,
    "tools": tools,
    "tool_choice": tool_choice,
    "parallel_tool_calls": boolean,
    "max_output_tokens": count(1),
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "text": text,
    "reasoning": reasoning,
    "metadata": metadata,
    # Chat-completions fields of the same name and meaning, passed on as sent (``PASSED_ON``).
    "user": string,
    "prompt_cache_key": string,
    "prompt_cache_retention": string,
    "safety_identifier": string,
    "service_tier": string,
    # Nothing to do for them: they limit or shape what only OpenAI's platform gives.
    "include": include,
    "max_tool_calls": count(0),  # limits hosted tools, which are refused
    "stream_options": obj,  # include_obfuscation: the gateway's stream has no obfuscation to drop
    "truncation": truncation,
    "top_logprobs": top_logprobs,
    "background": unavailable("background responses are not available through the gateway; leave it out or "
                              "set it to false"),
    "conversation": unavailable("the Conversations API is not available through the gateway; chain responses "
                                "with previous_response_id instead"),
    "prompt": unavailable("stored prompt templates are not available through the gateway; send the prompt as "
                          "input"),
    "context_management": unavailable("server-side context management is not available through the gateway"),
}

#: Fields passed on to a chat upstream under the same name.
PASSED_ON = frozenset(("user", "prompt_cache_key", "prompt_cache_retention", "safety_identifier", "service_tier"))


def read_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Each field of ``data`` that is not null, as its reader gives it back."""
    read: dict[str, Any] = {}
    for name, value in data.items():
        reader = READERS.get(name)
        if reader is None:
            raise APIError(400, f"unknown parameter {name!r}: the Responses API has no such field (or the gateway "
                                "does not know it yet)", code="unknown_parameter", param=name)
        if value is not None:
            read[name] = reader(value, name)
    return read
