"""JSON responses (orjson) and the one error shape every route uses.

Errors follow OpenAI's shape, ``{"error": {"message", "type", "code"}}``, so the
OpenAI SDKs raise their matching exception classes, and /generate clients get
the same shape.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class JSONResponse(Response):
    """A JSON response serialized with orjson (several times faster than the json module)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class APIError(Exception):
    """Raise from a route to answer with the error shape."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None,
        param: str | None = None, headers: dict[str, str] | None = None, **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers
        self.details = details


def error_response(error: APIError) -> JSONResponse:
    body: dict[str, Any] = {
        "message": error.message,
        "type": ERROR_TYPES.get(error.status, "error"),
        "code": error.code,
        "param": error.param,
        **error.details,
    }
    return JSONResponse({"error": body}, status_code=error.status, headers=error.headers)
