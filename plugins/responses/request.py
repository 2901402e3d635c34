"""What the Responses surface keeps of a request between ``parse`` and its answer, and the
400 that names a field the gateway cannot read or honour."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelbroker import APIError, ChatRequest


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
    echo: dict[str, Any]
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
