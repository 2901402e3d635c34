"""What no route should parse: oversized bodies and bodies that are not JSON.

Checked in ``core/_server/edge.py`` before routing, from the headers alone (a header
scan per request); a chunked body is counted as it is received.
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope

from modelbroker._routing.errors import APIError

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyRules:
    """413 for a body over ``max_body_bytes``; 415 for a body whose content type is not JSON."""

    def __init__(self, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes

    def check(self, scope: Scope) -> bool:
        """Raise the APIError refusing this request's headers, if any; True if the body has no
        declared length and must be counted as it arrives (``counting``)."""
        if scope["method"] not in BODY_METHODS:
            return False
        length, content_type = None, None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            raise self._too_large()
        if content_type is not None:
            media = content_type.split(b";", 1)[0].strip().lower()
            if media != b"application/json" and not media.endswith(b"+json"):
                raise APIError(
                    415, f"the body must be JSON: send 'Content-Type: application/json' "
                    f"(got {media.decode('latin-1')[:60]!r})", code="unsupported_media_type",
                )
        return length is None  # with a length, the server delivers no more than it says

    def counting(self, receive: Receive) -> Receive:
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

    def _too_large(self) -> APIError:
        return APIError(
            413, f"the body is larger than {self.max_body_bytes} bytes "
            "(MODELBROKER_MAX_BODY_BYTES)", code="body_too_large",
        )
