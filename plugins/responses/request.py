"""What the Responses surface keeps of a request between ``parse`` and its answer, and the
400 that names a field the gateway cannot read or honour."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from modelbroker import APIError, ChatRequest

#: What a Response repeats of a request that left the field out. Never changed: a request
#: that sent none of the fields a Response repeats has it as its ``echo``, and a Response
#: then takes the JSON below instead of serializing it again.
ECHO_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": True,
    "temperature": None,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": None,
    "truncation": "disabled",
})
ECHO_DEFAULTS_JSON = orjson.dumps(dict(ECHO_DEFAULTS))[1:-1] + b","


@dataclass(slots=True)
class ResponseCall:
    """What the surface keeps of one request from ``parse`` to its answer.

    ``input`` holds the request's own input items, as given (a string input as one user
    message), which a stored response keeps; ``echo`` the request fields that a Response
    object repeats; ``ancestors`` the stored responses it continues, oldest first.
    """

    response_id: str
    created_at: int
    input: list[dict[str, Any]]
    echo: Mapping[str, Any]
    store: bool
    owner: str | None
    retention_s: float
    previous_response_id: str | None = None
    ancestors: list[Any] = field(default_factory=list)
    #: The Response's JSON up to its status, and ``echo`` as JSON fields, each followed by a
    #: comma: made when a Response is first written (``answer.call_json_parts``).
    json_parts: tuple[bytes, bytes] | None = None


@dataclass(slots=True)
class ResponsesRequest(ChatRequest):
    """A ``ChatRequest`` that carries its ``ResponseCall`` to the surface's answer."""

    call: ResponseCall | None = None


def invalid(param: str, problem: str, code: str = "invalid_value") -> APIError:
    """A 400 naming the field, in the words OpenAI's API uses for its codes."""
    return APIError(400, f"{param}: {problem}", code=code, param=param)
