"""The gateway's one pooled HTTP client for upstream calls, on aiohttp.

Measured on this project's benchmark (docs/performance.md): per request,
aiohttp's client costs about 160 µs of CPU where httpx costs about 680 µs
(400 µs with httpx's aiohttp transport), and httpx's pool grows costlier with
concurrency. So adapters call upstreams through this small facade. It gives
what an adapter needs (a whole answer, or a stream of lines), applies the
provider's timeouts and turns every transport failure into a ``ProviderError``
without secrets. The httpx client remains on the ``client`` hook argument for
plugins written against it.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import aiohttp

from core.types import ErrorKind, ProviderError
from core.upstream import MAX_MESSAGE, redact

#: Connections kept in total and per upstream host; enough for a few hundred requests in flight.
MAX_CONNECTIONS = 1000
KEEPALIVE_S = 30.0


@dataclass(slots=True)
class UpstreamReply:
    """A whole answer: status, headers (case-insensitive) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class UpstreamStream:
    """An answer whose body is still arriving; ``close()`` (or ``async with``) releases it."""

    def __init__(self, response: aiohttp.ClientResponse, secret: str | None) -> None:
        self._response = response
        self._secret = secret
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    @property
    def is_json(self) -> bool:
        """The upstream answered with one JSON document (say, it ignored ``stream: true``)."""
        return self.headers.get("content-type", "").startswith("application/json")

    async def read(self) -> bytes:
        """The rest of the body, at once."""
        try:
            return await self._response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise transport_error(exc, self._secret) from None

    async def lines(self) -> AsyncIterator[bytes]:
        """The body line by line (without the line ending), each as soon as it is complete."""
        pending = b""
        try:
            async for data in self._response.content.iter_any():
                pending += data
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.rstrip(b"\r")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            error = transport_error(exc, self._secret)
            # aiohttp refuses to hand out what it had buffered once the connection broke; the
            # complete lines in it arrived before the break, so they are still relayed.
            *complete, _ = (pending + _buffered(self._response.content)).split(b"\n")
            for line in complete:
                yield line.rstrip(b"\r")
            raise error from None
        if pending:
            yield pending.rstrip(b"\r")

    async def close(self) -> None:
        self._response.release()
        self._response.close()

    async def __aenter__(self) -> UpstreamStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class UpstreamHTTP:
    """One aiohttp session for every upstream call of a gateway (connections are pooled)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}
        self._proxies: dict[str, str | None] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=KEEPALIVE_S)
        # trust_env=True would read ~/.netrc and the proxy variables on every request (~8% of
        # the gateway's CPU); the proxy for each endpoint is worked out once instead (_proxy).
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> UpstreamHTTP:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float,
                   connect_timeout_s: float, secret: str | None = None) -> UpstreamReply:
        """POST ``body`` and read the whole answer; raises ProviderError for a transport failure.

        ``timeout_s`` bounds each wait for data (connect has its own bound); ``secret``
        is removed from any error message.
        """
        try:
            async with self._session.post(url, data=body, headers=headers, proxy=self._proxy(url),
                                          timeout=self._timeout(timeout_s, connect_timeout_s)) as response:
                return UpstreamReply(response.status, response.headers, await response.read())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise transport_error(exc, secret) from None

    async def stream(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float,
                     connect_timeout_s: float, secret: str | None = None) -> UpstreamStream:
        """POST ``body`` and return once the answer's headers are in; read it from the stream."""
        try:
            response = await self._session.post(url, data=body, headers=headers, proxy=self._proxy(url),
                                                timeout=self._timeout(timeout_s, connect_timeout_s))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise transport_error(exc, secret) from None
        return UpstreamStream(response, secret)

    def _proxy(self, url: str) -> str | None:
        """The proxy for ``url`` from HTTP(S)_PROXY and NO_PROXY, looked up once per URL."""
        try:
            return self._proxies[url]
        except KeyError:
            pass
        parts = urllib.parse.urlsplit(url)
        proxy = urllib.request.getproxies().get(parts.scheme)
        if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
            proxy = None
        self._proxies[url] = proxy
        return proxy

    def _timeout(self, read_s: float, connect_s: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get((read_s, connect_s))
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_s, sock_read=read_s)
            self._timeouts[(read_s, connect_s)] = timeout
        return timeout


async def open_event_stream(
    http: UpstreamHTTP, provider, url: str, body: bytes, headers: Mapping[str, str],
    status_error: Callable[[int, Mapping[str, str], bytes, str | None], ProviderError],
) -> UpstreamStream:
    """POST a streaming request to ``provider``; the stream once the answer is 2xx.

    A non-2xx answer is read, closed and raised as ``status_error(status, headers,
    body, secret)`` (each wire format has its own error shape).
    """
    secret = provider.api_key.get_secret_value() if provider.api_key else None
    stream = await http.stream(url, body, headers, timeout_s=provider.timeout_s,
                               connect_timeout_s=provider.connect_timeout_s, secret=secret)
    if stream.status < 300:
        return stream
    try:
        content = await stream.read()
    except ProviderError:
        content = b""
    finally:
        await stream.close()
    raise status_error(stream.status, stream.headers, content, secret)


def _buffered(content: aiohttp.StreamReader) -> bytes:
    """What ``content`` received but did not hand out (read from aiohttp's internals, defensively)."""
    buffer = getattr(content, "_buffer", None)
    try:
        return b"".join(bytes(part) for part in buffer) if buffer else b""
    except TypeError:
        return b""


def transport_error(exc: BaseException, secret: str | None = None) -> ProviderError:
    """A ProviderError for a failure that produced no (complete) HTTP answer."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        kind, what = ErrorKind.TIMEOUT, f"{type(exc).__name__}: the upstream did not answer in time"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        kind, what = ErrorKind.CONNECT, f"cannot connect: {exc}"
    else:
        kind, what = ErrorKind.CONNECTION, f"{type(exc).__name__}: {exc}"
    return ProviderError(kind, redact(what, secret)[:MAX_MESSAGE])
