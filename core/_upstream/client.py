"""The gateway's one pooled HTTP client for upstream calls.

Adapters call upstreams through this small facade. It gives what an adapter
needs (a whole answer, or a stream of lines), applies the provider's timeouts and
turns every transport failure into a ``ProviderError`` without secrets. The bytes move
through a ``Transport`` (``transport.py``): ``http1`` by default, aiohttp's for calls
to an endpoint behind ``HTTPS_PROXY``/``HTTP_PROXY``, or for every call with
``MODELBROKER_UPSTREAM_TRANSPORT=aiohttp``. The httpx client remains on the
``client`` argument for adapters written against it.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from modelbroker._routing.types import ErrorKind, ProviderError
from modelbroker._upstream.errors import MAX_MESSAGE, redact
from modelbroker._upstream.sse import EventData
from modelbroker._upstream.transport import Transport, TransportError, make_transport

#: Connections in use at once, over all upstreams; more calls wait for one to be free.
MAX_CONNECTIONS = 1000
KEEPALIVE_S = 30.0
#: Headers the ``on_attempt`` hooks gave for the attempt running in this task (the router sets
#: it only when some plugin implements the hook), added to each of its upstream calls.
ATTEMPT_HEADERS: ContextVar[Mapping[str, str] | None] = ContextVar("modelbroker_attempt_headers", default=None)


@dataclass(slots=True)
class UpstreamReply:
    """A whole answer: status, headers (case-insensitive) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class UpstreamStream:
    """An answer whose body is still arriving; ``close()`` (or ``async with``) releases it."""

    def __init__(self, response, secret: str | None) -> None:
        self._response = response
        self._secret = secret
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers

    @property
    def is_json(self) -> bool:
        """The upstream answered with one JSON document (say, it ignored ``stream: true``)."""
        return self.headers.get("content-type", "").startswith("application/json")

    async def read(self) -> bytes:
        """The rest of the body, at once."""
        try:
            return await self._response.read()
        except TransportError as exc:
            raise transport_error(exc, self._secret) from None

    async def lines(self):
        """The body line by line (without the line ending), each as soon as it is complete.

        Lines complete before a broken connection are given before the error is raised.
        """
        pending = b""
        try:
            async for data in self._response.chunks():
                complete, pending = _split_lines(pending + data)
                for line in complete:
                    yield line
        except TransportError as exc:
            raise transport_error(exc, self._secret) from None
        if pending:
            yield pending.rstrip(b"\r")

    async def events(self):
        """The ``data:`` payload of each server-sent event, once the blank line ending it is in
        (what ``modelbroker._upstream.sse.sse_data`` gives). Events complete before a broken connection are
        given before the error is raised.

        One generator where ``sse_data`` over ``lines()`` made two, with two lines of every
        event passing from one to the other: a measurable share of a streamed request's CPU
        (docs/performance.md, 'Measurements behind the code').
        """
        collect = EventData()
        pending = b""
        try:
            async for data in self._response.chunks():
                complete, pending = _split_lines(pending + data)
                for line in complete:
                    payload = collect.line(line)
                    if payload is not None:
                        yield payload
        except TransportError as exc:
            raise transport_error(exc, self._secret) from None
        if pending:  # a last line with no line ending
            payload = collect.line(pending.rstrip(b"\r"))
            if payload is not None:
                yield payload
        payload = collect.end()
        if payload is not None:
            yield payload

    async def close(self) -> None:
        self._response.release()

    async def __aenter__(self) -> UpstreamStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _split_lines(pending: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of ``pending`` (line endings dropped) and the incomplete rest."""
    if b"\n" not in pending:
        return [], pending
    *complete, rest = pending.split(b"\n")
    return [line.rstrip(b"\r") for line in complete], rest


class UpstreamHTTP:
    """The pooled client for every upstream call of a gateway; ``transport`` names the
    ``Transport`` direct calls go through (``http1`` or ``aiohttp``)."""

    def __init__(self, transport: str = "http1") -> None:
        self.transport = transport
        self._direct: Transport | None = None
        self._proxied: Transport | None = None  # aiohttp's, made on the first call through a proxy
        self._proxies: dict[str, str | None] = {}

    async def start(self) -> None:
        self._direct = make_transport(self.transport, MAX_CONNECTIONS, KEEPALIVE_S)
        if self.transport == "aiohttp":
            self._proxied = self._direct  # one session for both

    async def close(self) -> None:
        for transport in {id(t): t for t in (self._direct, self._proxied) if t is not None}.values():
            await transport.close()
        self._direct = self._proxied = None

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
        response = await self._send(url, body, headers, timeout_s, connect_timeout_s, secret)
        try:
            content = await response.read()
        except TransportError as exc:
            raise transport_error(exc, secret) from None
        return UpstreamReply(response.status, response.headers, content)

    async def stream(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float,
                     connect_timeout_s: float, secret: str | None = None) -> UpstreamStream:
        """POST ``body`` and return once the answer's headers are in; read it from the stream."""
        return UpstreamStream(await self._send(url, body, headers, timeout_s, connect_timeout_s, secret), secret)

    async def _send(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float,
                    connect_timeout_s: float, secret: str | None):
        added = ATTEMPT_HEADERS.get()
        if added:
            headers = {**headers, **added}
        try:
            proxy = self._proxy(url)
            if proxy is None:
                return await self._direct.request("POST", url, body, headers, read_timeout=timeout_s,
                                                  connect_timeout=connect_timeout_s)
            try:
                return await self._via_proxy().request("POST", url, body, headers, read_timeout=timeout_s,
                                                       connect_timeout=connect_timeout_s, proxy=proxy)
            except TransportError as exc:
                raise transport_error(exc, secret, proxy=proxy) from None
        except TransportError as exc:
            raise transport_error(exc, secret) from None
        except ValueError as exc:
            raise ProviderError(ErrorKind.CONNECTION, redact(f"cannot send the request: {exc}", secret)) from None

    def _via_proxy(self):
        if self._proxied is None:
            self._proxied = make_transport("aiohttp", MAX_CONNECTIONS, KEEPALIVE_S)
        return self._proxied

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


async def open_event_stream(
    http: UpstreamHTTP, provider, url: str, body: bytes, headers: Mapping[str, str],
    status_error: Callable[[int, Mapping[str, str], bytes, str | None], ProviderError],
) -> UpstreamStream:
    """POST a streaming request to ``provider``; the stream once the answer is 2xx.

    A non-2xx answer is read, closed and raised as ``status_error(status, headers,
    body, secret)`` (each wire format has its own error shape).
    """
    secret = provider.secret()
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


def transport_error(exc: TransportError, secret: str | None = None, proxy: str | None = None) -> ProviderError:
    """A ProviderError for a failure that produced no (complete) HTTP answer; with ``proxy``,
    its user and password are masked too (aiohttp names the proxy's URL in some errors)."""
    kind = {"timeout": ErrorKind.TIMEOUT, "connect": ErrorKind.CONNECT}.get(exc.kind, ErrorKind.CONNECTION)
    text = redact(str(exc), secret)
    if proxy is not None:
        text = without_url_credentials(text, proxy)
    return ProviderError(kind, text[:MAX_MESSAGE])


def without_url_credentials(text: str, url: str) -> str:
    """``text`` with the user and password of ``url`` (a proxy's, a gateway's) masked. The
    credentials are everything between ``//`` and the last ``@`` of the URL: a password with
    an unencoded ``/`` or ``#`` in it does not hide from that."""
    rest = url.split("//", 1)[-1]
    userinfo = rest.rpartition("@")[0]
    if not userinfo:
        return text
    text = text.replace(userinfo + "@", "***@")
    for part in userinfo.split(":", 1):
        text = redact(text, part)
    return text
