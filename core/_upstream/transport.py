"""The one interface the upstream client sends through, and the transports that implement it.

``UpstreamHTTP`` (``client.py``) gives adapters a whole answer or a stream, applies the
provider's timeouts and turns failures into ``ProviderError``; underneath, a ``Transport``
moves the bytes. Two implement it:

- ``http1`` (the default, ``http1.py``): a small keep-alive HTTP/1.1 client on asyncio and
  httptools' parser, written for this; per call it costs a fraction of aiohttp's CPU
  (docs/performance.md). It does not go through proxies.
- ``aiohttp`` (``aiohttp_transport.py``): aiohttp's client. It carries every call to an
  endpoint behind ``HTTPS_PROXY``/``HTTP_PROXY``, and all calls with
  ``MODELBROKER_UPSTREAM_TRANSPORT=aiohttp`` (say, to rule out the own client when an
  upstream misbehaves). It is imported only when it is first needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

#: The transports ``MODELBROKER_UPSTREAM_TRANSPORT`` may name.
TRANSPORTS = ("http1", "aiohttp")


class TransportError(Exception):
    """No complete answer. ``kind`` is ``connect``, ``timeout`` or ``connection``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Response(Protocol):
    """An answer whose head is in: its status and (case-insensitive) headers; the body to read."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes:
        """The whole body; the connection is released after. Raises TransportError."""

    def chunks(self) -> AsyncIterator[bytes]:
        """The body in pieces as they arrive; pieces in before a failure come before the TransportError."""

    def release(self) -> None:
        """Let the connection go (back to the pool if the body was read through)."""


class Transport(Protocol):
    """Pooled connections to any number of origins; one per gateway."""

    async def request(self, method: str, url: str, body: bytes, headers: Mapping[str, str], *,
                      read_timeout: float, connect_timeout: float) -> Response:
        """Send the request; return once the answer's status and headers are in.

        ``read_timeout`` bounds each wait for data. Raises TransportError; ValueError for a
        URL or header that cannot be sent.
        """

    async def close(self) -> None:
        """Close every connection."""


def make_transport(name: str, max_connections: int, keepalive_s: float) -> Transport:
    """The transport called ``name`` (one of TRANSPORTS)."""
    if name == "aiohttp":
        from modelbroker._upstream.aiohttp_transport import AiohttpTransport

        return AiohttpTransport(max_connections, keepalive_s)
    from modelbroker._upstream.http1 import Http1Client

    return Http1Client(max_connections=max_connections, keepalive_s=keepalive_s)
