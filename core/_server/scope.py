"""Reading a request's ASGI scope and body directly, without building Starlette objects.

The generation routes run for every model call; a header or a state value read
here costs a loop over a short list, where ``request.headers`` and
``request.state`` each build an object (and a missing state attribute raises).
The state dict is the one Starlette's ``request.state`` wraps, so both see the same values.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Receive, Scope

from modelbroker._server.disconnect import ClientGone


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


async def read_body(receive: Receive) -> bytes:
    """The whole request body, from ASGI ``receive`` messages; ClientGone if the client left
    before sending all of it (answered 499, to nobody; Starlette's ``ClientDisconnect``
    was reported as an unexpected error).

    What Starlette's ``request.body()`` does, without the async generator it reads
    through: the event loop tracks every async generator in a WeakSet, and the two
    together were a measurable cost per request (docs/performance.md, 'Measurements
    behind the code').
    """
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientGone()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
