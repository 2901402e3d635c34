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
from starlette.types import Send

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

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
