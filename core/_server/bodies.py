"""Reading a request body for a surface: JSON, an object, and fields checked, with errors that
name the field (``messages[0].role: ...``) in the status a client SDK expects."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from modelbroker._config.messages import problems
from modelbroker._routing.errors import APIError

#: orjson writes at most this many nested levels (it reads up to 1024); a body with fewer
#: bytes than this cannot be nested that deep, so most requests skip the check.
MAX_DEPTH = 254
MIN_BYTES_FOR_DEEP_NESTING = 2 * MAX_DEPTH


def json_object(body: bytes, what: str = "a JSON object") -> dict[str, Any]:
    """The body as a dict; raises APIError 400 if it is not JSON, not an object, or nested
    deeper than the gateway can forward. ``what`` names the expected request in the message
    (``"an OpenAI chat request"``)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise APIError(400, "the body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, f"the body must be a JSON object ({what})", code="invalid_body")
    if len(body) > MIN_BYTES_FOR_DEEP_NESTING and not _encodable(data):
        raise APIError(400, f"the body is nested more than {MAX_DEPTH} levels deep; it cannot be forwarded",
                       code="invalid_body")
    return data


def checked_json(body: bytes, adapter: TypeAdapter, what: str = "a JSON object") -> dict[str, Any]:
    """``json_object(body, what)`` once ``adapter`` (a pydantic ``TypeAdapter`` of the body's
    shape) has checked it; raises APIError 400 naming every field that is wrong. The dict is
    returned as read, not as the adapter would convert it."""
    data = json_object(body, what)
    try:
        adapter.validate_python(data)
    except ValidationError as exc:
        raise invalid_fields(exc) from None
    return data


def invalid_fields(error: ValidationError, status: int = 400) -> APIError:
    """The APIError for a pydantic ValidationError of a body: every problem, by field, in one
    message; ``param`` names the first field."""
    found = problems(error.errors(include_input=False, include_url=False))
    return APIError(status, "; ".join(f"{field}: {text}" for field, text in found), code="invalid_field",
                    param=found[0][0] if found else None)


def _encodable(data: Any) -> bool:
    try:
        orjson.dumps(data)
    except orjson.JSONEncodeError:
        return False
    return True
