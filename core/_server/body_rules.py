"""What no route should parse: oversized bodies and bodies that are not JSON; and how much
memory request bodies may take together.

Checked in ``core/_server/edge.py`` before routing, from the headers alone (a header
scan per request); a chunked body is counted as it is received.

The budget (``MODELBROKER_MAX_BODIES_IN_FLIGHT_BYTES``) bounds the memory that bodies in
flight take together: each request is charged ``BODY_COPIES`` times its body, from before
its body is read (by ``content-length``; a chunked body as its bytes arrive) until the
request has been answered, since the parsed copy and the upstream request built from it
live that long. Past the budget a request gets 503 and ``Retry-After``. One event loop runs
the charges, so a counter needs no lock; the cost per request is an add and a subtract.
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope

from modelbroker._config.settings import BODY_COPIES
from modelbroker._routing.errors import APIError

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MIB = 1024 * 1024
#: Seconds a client is told to wait before it retries a body refused for the budget.
RETRY_AFTER_S = 1


class BodyRules:
    """413 for a body over ``max_body_bytes``; 415 for a body whose content type is not JSON;
    503 while bodies in flight would take more than ``max_in_flight_bytes``."""

    def __init__(self, max_body_bytes: int, max_in_flight_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_in_flight_bytes = max_in_flight_bytes
        #: What the requests in flight are charged, together (bytes).
        self.in_flight = 0

    def check(self, scope: Scope) -> int | None:
        """Raise the APIError refusing this request's headers, if any; else charge its declared
        body and return the charge, for ``release`` once the request is answered. None: the body
        has no declared length and must be counted as it arrives (``counting``)."""
        if scope["method"] not in BODY_METHODS:
            return 0
        length, content_type = None, None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
        size = None
        if length is not None and (not length.isdigit() or (size := int(length)) > self.max_body_bytes):
            raise self._too_large()
        if content_type is not None:
            media = content_type.split(b";", 1)[0].strip().lower()
            if media != b"application/json" and not media.endswith(b"+json"):
                raise APIError(
                    415, f"the body must be JSON: send 'Content-Type: application/json' "
                    f"(got {media.decode('latin-1')[:60]!r})", code="unsupported_media_type",
                )
        if size is None:
            return None
        charge = size * BODY_COPIES  # with a length, the server delivers no more than it says
        self.charge(charge)
        return charge

    def charge(self, size: int) -> None:
        """Count ``size`` more bytes in flight; APIError 503 (and nothing counted) past the budget."""
        total = self.in_flight + size
        if total > self.max_in_flight_bytes:
            raise self._full()
        self.in_flight = total

    def release(self, size: int) -> None:
        self.in_flight -= size

    def counting(self, receive: Receive) -> CountedBody:
        """``receive`` that charges a chunked body as it arrives, raising APIError 413 once it
        passes the limit (503 once it would pass the budget)."""
        return CountedBody(self, receive)

    def _too_large(self) -> APIError:
        return APIError(
            413, f"the body is larger than {_size(self.max_body_bytes)}, the gateway's limit "
            "(MODELBROKER_MAX_BODY_BYTES): send a smaller one (an image by URL rather than inline, "
            "or fewer images), or ask the operator to raise the limit", code="body_too_large",
        )

    def _full(self) -> APIError:
        return APIError(
            503, f"the gateway is busy: with this body, the request bodies it holds would take more than "
            f"their memory budget, {_size(self.max_in_flight_bytes)} (MODELBROKER_MAX_BODIES_IN_FLIGHT_BYTES): "
            f"retry in {RETRY_AFTER_S} s (Retry-After), or send a smaller body", code="bodies_in_flight_full",
            headers={"retry-after": str(RETRY_AFTER_S)},
        )


class CountedBody:
    """A request's ``receive`` for a body of unknown length: ``charged`` is what it has
    charged so far, for ``BodyRules.release`` once the request is answered."""

    __slots__ = ("rules", "receive", "seen", "charged")

    def __init__(self, rules: BodyRules, receive: Receive) -> None:
        self.rules = rules
        self.receive = receive
        self.seen = 0
        self.charged = 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            size = len(message.get("body", b""))
            self.seen += size
            if self.seen > self.rules.max_body_bytes:
                raise self.rules._too_large()
            self.rules.charge(size * BODY_COPIES)
            self.charged += size * BODY_COPIES
        return message


def _size(size: int) -> str:
    """``20971520 bytes (20 MiB)``; ``2000 bytes``."""
    return f"{size} bytes ({size // MIB} MiB)" if size >= MIB and size % MIB == 0 else f"{size} bytes"
