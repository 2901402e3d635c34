"""Request ids: the client's own ``x-request-id`` when it is sane, else a new one."""

from __future__ import annotations

import random
import re

from core.scope import header, state

_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(client_value: str | None) -> str:
    """``client_value`` if it is a short token, else 16 random hex digits."""
    if client_value and _SANE.fullmatch(client_value):
        return client_value
    return f"{random.getrandbits(64):016x}"  # an id, not a secret: no system call per request


def request_id_of(request) -> str:
    """The id of a Starlette request, made once and kept in ``request.state``."""
    kept = state(request.scope)
    rid = kept.get("request_id")
    if rid is None:
        rid = kept["request_id"] = request_id(header(request.scope, b"x-request-id"))
    return rid
