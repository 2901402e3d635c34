"""Server-sent events out: encoding, and a response that always closes its source.

Starlette's StreamingResponse stops iterating when the client goes away but
leaves the generator suspended; ``EventStreamResponse`` closes it at once
(shielded from the cancellation), so the upstream call is closed and the
attempt is recorded as cancelled right away, not whenever the generator is
garbage-collected.
"""

from __future__ import annotations

from typing import Any

import anyio
import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from modelbroker._server.disconnect import ClientGone, unless_disconnected

DONE = b"data: [DONE]\n\n"


def sse_event(payload: Any, event: str | None = None) -> bytes:
    """One ``data:`` event holding ``payload`` as JSON, optionally named."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` with no buffering by proxies, and a source that is always closed."""

    media_type = "text/event-stream"

    def __init__(self, content: Any, headers: dict[str, str] | None = None) -> None:
        headers = {"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})}
        super().__init__(content, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Relay the events until the source ends or the client goes away.

        Starlette's own ``__call__`` runs an anyio task group with a second task per
        response to listen for the disconnect (uvicorn speaks ASGI 2.3); the gateway's
        disconnect watcher (core/_server/disconnect.py, one task) does the same job for less.
        """
        try:
            await unless_disconnected(receive, self.stream_response(send))
        except ClientGone:
            pass  # the source is closed; nobody is left to answer

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
