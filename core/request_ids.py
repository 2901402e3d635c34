"""Request ids: the client's own ``x-request-id`` when it is sane, else a new one."""

from __future__ import annotations

import os
import re

_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(client_value: str | None) -> str:
    """``client_value`` if it is a short token, else 16 random hex digits."""
    if client_value and _SANE.fullmatch(client_value):
        return client_value
    return os.urandom(8).hex()


def request_id_of(request) -> str:
    """The id of a Starlette request, made once and kept in ``request.state``."""
    state = request.state
    rid = getattr(state, "request_id", None)
    if rid is None:
        rid = state.request_id = request_id(request.headers.get("x-request-id"))
    return rid
