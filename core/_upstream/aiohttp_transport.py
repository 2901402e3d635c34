"""The ``aiohttp`` transport (``transport.py``): upstream calls on aiohttp's client.

It carries the calls to an endpoint that ``HTTPS_PROXY``/``HTTP_PROXY`` apply to (and
``NO_PROXY`` does not exempt), which the ``http1`` transport does not handle, and every
call with ``MODELBROKER_UPSTREAM_TRANSPORT=aiohttp``. The answer has the shape of
``transport.Response`` and failures raise ``TransportError``, as ``http1``'s do.
aiohttp is imported only when this transport is first made.

It never sends a request twice either. aiohttp (3.9 and later, ``ClientSession._request``)
sends a request once more on a new connection when a kept one fails with ``ClientOSError``
or ``ServerDisconnectedError``, but only for idempotent methods
(``aiohttp.client.IDEMPOTENT_METHODS``: GET, HEAD, OPTIONS, TRACE, PUT, DELETE); every call
through here is a POST (``UpstreamHTTP`` sends nothing else), which it sends once
(tests/core/test_http1.py holds it to that). Unlike ``http1`` it takes only the event loop's
word that an idle connection is open and does not read ``Keep-Alive: timeout``, so an idle
close racing a request ends that attempt a little more often here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from modelbroker._upstream.transport import TransportError


class AiohttpResponse:
    def __init__(self, response) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers  # case-insensitive, like http1's

    async def read(self) -> bytes:
        import aiohttp

        try:
            return await self._response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _transport_error(exc) from None
        finally:
            self.release()

    async def chunks(self):
        import aiohttp

        content = self._response.content
        try:
            async for data in content.iter_any():
                yield data
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            # aiohttp keeps back what it had buffered once the connection broke; those bytes
            # arrived before the break, so they are handed out before the error.
            left = _buffered(content)
            if left:
                yield left
            raise _transport_error(exc) from None
        finally:
            self.release()

    def release(self) -> None:
        self._response.release()
        self._response.close()


class AiohttpTransport:
    """One aiohttp session for the gateway's calls through it."""

    def __init__(self, max_connections: int, keepalive_s: float) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, keepalive_timeout=keepalive_s)
        # trust_env=False: the proxy is chosen once per endpoint by core/_upstream/client.py, not per request.
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False)
        self._timeouts: dict[tuple[float, float], object] = {}

    async def request(self, method: str, url: str, body: bytes, headers: Mapping[str, str], *,
                      read_timeout: float, connect_timeout: float, proxy: str | None = None) -> AiohttpResponse:
        import aiohttp

        timeout = self._timeouts.get((read_timeout, connect_timeout))
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
            self._timeouts[(read_timeout, connect_timeout)] = timeout
        try:
            response = await self._session.request(method, url, data=body, headers=headers, proxy=proxy,
                                                   timeout=timeout)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _transport_error(exc) from None
        return AiohttpResponse(response)

    async def close(self) -> None:
        await self._session.close()


def _transport_error(exc: BaseException) -> TransportError:
    import aiohttp

    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return TransportError("timeout", f"{type(exc).__name__}: the upstream did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransportError("connect", f"cannot connect: {exc}")
    return TransportError("connection", f"{type(exc).__name__}: {exc}")


def _buffered(content) -> bytes:
    """What ``content`` received but did not hand out (read from aiohttp's internals, defensively)."""
    buffer = getattr(content, "_buffer", None)
    try:
        return b"".join(bytes(part) for part in buffer) if buffer else b""
    except TypeError:
        return b""
