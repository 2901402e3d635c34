"""JSON responses (orjson) and the one error shape every route uses.

Errors follow OpenAI's shape, ``{"error": {"message", "type", "code"}}``, so the
OpenAI SDKs raise their matching exception classes, and /generate clients get
the same shape.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from modelbroker._routing.errors import APIError

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


def openai_error_body(error: APIError) -> dict[str, Any]:
    """``{"error": {"message", "type", "code", "param", ...}}``: OpenAI's shape, the gateway's own."""
    return {"error": {
        "message": error.message,
        "type": error.type or ERROR_TYPES.get(error.status, "error"),
        "code": error.code,
        "param": error.param,
        **error.details,
    }}


def error_response(error: APIError, body: dict[str, Any] | None = None) -> JSONResponse:
    """``error`` answered with ``body`` (a surface's shape), else in OpenAI's shape."""
    return JSONResponse(body if body is not None else openai_error_body(error), status_code=error.status,
                        headers=error.headers)


class ErrorDetail(BaseModel):
    """What went wrong; ``attempts`` lists each provider's try when every one failed."""

    model_config = ConfigDict(extra="allow")

    message: str
    type: str
    code: str | None = None
    param: str | None = None
    attempts: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


#: What each error status means on the gateway's routes, for /openapi.json.
ERROR_MEANINGS = {
    400: "The request is not one the gateway can route: the body is not JSON, a field is wrong, "
         "or an unknown strategy was asked for (`param` names the field).",
    401: "Client keys are configured and the request has no valid one.",
    403: "The client key may not use the model asked for, or the route needs an admin key.",
    404: "No provider serves the model asked for.",
    413: "The body is larger than MODELBROKER_MAX_BODY_BYTES (20 MiB by default).",
    415: "The body is not sent as JSON.",
    422: "A field of the body, or a query parameter, is invalid (`param` names it).",
    429: "A limit was reached (the client's rate or budget, or every provider is rate-limiting "
         "or busy); `Retry-After` says when to try again.",
    500: "A plugin or the gateway itself failed; the gateway log has the details.",
    502: "Every provider attempt failed; `attempts` lists them.",
    503: "No provider can take the request now (all disabled or cooling down), a store the "
         "route needs is not running, or the request bodies in flight fill their memory budget "
         "(MODELBROKER_MAX_BODIES_IN_FLIGHT_BYTES); `Retry-After` says when to try again.",
    504: "The request's deadline passed before any provider answered; `attempts` lists them.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses`` documenting ``statuses`` with the error shape."""
    return {status: {"model": ErrorBody, "description": ERROR_MEANINGS[status]} for status in statuses}
