"""ASGI middleware that turns away what no route should parse: oversized bodies and
bodies that are not JSON. It runs before routing, in plain ASGI, so it costs a header
scan per request and holds nothing."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.request_ids import request_id
from core.responses import APIError, error_response

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class RequestGuard:
    """413 for a body over ``max_body_bytes``; 415 for a body whose content type is not JSON."""

    def __init__(self, app: ASGIApp, max_body_bytes: int,
                 on_refusal: Callable[[str, str, APIError], None] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.on_refusal = on_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        length, content_type = None, None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
        refusal = self._refusal(length, content_type)
        if refusal is not None:
            rid = request_id(dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1"))
            refusal.headers = {"x-request-id": rid}
            if self.on_refusal is not None:
                self.on_refusal(scope["path"], rid, refusal)
            await error_response(refusal)(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _refusal(self, length: bytes | None, content_type: bytes | None) -> APIError | None:
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return self._too_large()
        if content_type is not None:
            media = content_type.split(b";", 1)[0].strip().lower()
            if media != b"application/json" and not media.endswith(b"+json"):
                return APIError(
                    415, f"the body must be JSON: send 'Content-Type: application/json' "
                    f"(got {media.decode('latin-1')[:60]!r})", code="unsupported_media_type",
                )
        return None

    def _too_large(self) -> APIError:
        return APIError(
            413, f"the body is larger than {self.max_body_bytes} bytes "
            "(MODELBROKER_MAX_BODY_BYTES)", code="body_too_large",
        )

    def _counting(self, receive: Receive) -> Receive:
        """``receive`` that raises APIError(413) once a chunked body passes the limit."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise self._too_large()
            return message

        return counted
