"""Errors in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``.

The type follows the status as Anthropic's API and SDK pair them: the SDK picks its
exception by status (``BadRequestError`` for 400, ``AuthenticationError`` for 401, ...,
``InternalServerError`` for 5xx, with ``ServiceUnavailableError`` for 503 and
``GatewayTimeoutError`` for 504), and clients read the type. The gateway's own 502 (every
provider failed), 503 (none can take the request) and 504 (the deadline passed) keep their
status, typed ``api_error``, ``overloaded_error`` and ``timeout_error``. The gateway's code and
the attempts made ride along in the error object, which clients that do not know them ignore.
"""

from __future__ import annotations

from typing import Any

from modelbroker import APIError, ProviderError, sse_event

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
KNOWN_TYPES = frozenset(TYPES.values())


def error_type(status: int, given: str | None = None) -> str:
    """Anthropic's error type for ``status``; ``given`` (an upstream's own type) if it is one of them."""
    if given in KNOWN_TYPES:
        return given
    return TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_body(error: APIError) -> dict[str, Any]:
    detail: dict[str, Any] = {"type": error_type(error.status, error.type), "message": error.message}
    if error.code is not None:
        detail["code"] = error.code
    if error.param is not None:
        detail["param"] = error.param
    detail.update(error.details)
    return {"type": "error", "error": detail}


def stream_error_event(error: ProviderError) -> bytes:
    """The ``error`` event that ends a stream the upstream broke after content was sent."""
    return sse_event({"type": "error", "error": {
        "type": "api_error",
        "message": f"the upstream failed mid-stream; the answer is incomplete: {error.message}",
    }}, event="error")
