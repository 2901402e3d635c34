"""Reading a request's ASGI scope directly, without building Starlette objects.

The generation routes run for every model call; a header or a state value read
here costs a loop over a short list, where ``request.headers`` and
``request.state`` each build an object (and a missing state attribute raises).
The state dict is the one Starlette's ``request.state`` wraps, so both see the same values.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case, as ASGI gives names), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def state(scope: Scope) -> dict[str, Any]:
    """The request's state dict (``request.state`` in Starlette), made if missing."""
    found = scope.get("state")
    if found is None:
        found = scope["state"] = {}
    return found
