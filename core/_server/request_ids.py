"""Request ids: the client's own ``x-request-id`` when it is sane, else a new one."""

from __future__ import annotations

import re

from modelbroker._routing.types import unique_id
from modelbroker._server.scope import header, state

_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(client_value: str | None) -> str:
    """``client_value`` if it is a short token, else a new ``unique_id`` (32 hex digits, in time order)."""
    if client_value and _SANE.fullmatch(client_value):
        return client_value
    return unique_id()


def request_id_of(request) -> str:
    """The id of a Starlette request, made once and kept in ``request.state``."""
    kept = state(request.scope)
    rid = kept.get("request_id")
    if rid is None:
        rid = kept["request_id"] = request_id(header(request.scope, b"x-request-id"))
    return rid
