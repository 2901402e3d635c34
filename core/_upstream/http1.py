"""A small HTTP/1.1 client for upstream calls: pooled keep-alive connections, httptools' parser.

Why not aiohttp's client: under the benchmark (``python -m bench.profile --py-spy``)
aiohttp's client was a large share of the gateway's CPU (docs/performance.md,
'Measurements behind the code'); this client, an ``asyncio.Protocol`` around the same
llhttp parser uvicorn uses, needs a fraction of that because it does only what an
upstream call needs:

* a request with a body of bytes; the status and headers once they are in; the body
  whole (``read``) or in pieces as they arrive (``chunks``), with back-pressure;
* keep-alive connections kept per origin, each for ``keepalive_s`` or, when the upstream
  says when it closes idle connections (``Keep-Alive: timeout=N``), until a little before;
* TLS with the system's certificate store (``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` work);
* a connect timeout, and a read timeout that bounds each wait for data;
* at most ``max_connections`` connections in use; callers beyond that wait for one.

No request is sent twice. An upstream that read a prompt has it in the works, and may bill
it, whether or not it answers. So:

* a kept connection is used only if nothing came in on it while idle: no end, no reset, no
  byte nobody asked for. The event loop's word is taken, and, for a connection idle
  ``IDLE_CHECK_S`` or more, the kernel's on what came in since the loop last looked (one
  ``poll``); with no ``await`` between that look and the write;
* a request goes out again, on another connection, only when its write failed there and
  then, so that none of it left (plain TCP reports that in the write; over TLS the failure
  shows later, and counts as below);
* a connection that closes after the request was written, before any byte of an answer, is
  a failed attempt (TransportError ``connection``): the router decides whether to try again,
  and counts it.

The race that remains, an upstream closing an idle connection as a request goes out on it,
is kept rare by dropping kept connections before the upstream would.

Not here: proxies (``core/_upstream/client.py`` sends proxied calls through aiohttp), decompression
(the request asks for ``identity`` unless the caller sets ``accept-encoding`` itself),
redirects, cookies, HTTP/2.
"""

from __future__ import annotations

import asyncio
import functools
import select
import ssl
import time
import urllib.parse
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import httptools

from modelbroker import __version__
from modelbroker._upstream.transport import TransportError

#: Body bytes held unread before the socket stops being read (the upstream then waits).
HIGH_WATER = 256 * 1024
USER_AGENT = f"modelbroker/{__version__}"
#: Sent unless the caller gives its own (in any case); compression is not supported.
DEFAULT_HEADERS = {"user-agent": USER_AGENT, "accept-encoding": "identity"}
#: Always the client's own, worked out from the URL and the body.
OWN_HEADERS = frozenset({"host", "content-length"})
#: Request heads kept (by method, URL and headers): one per provider in practice; a plugin sending
#: per-request headers would make one each, so the table is emptied when it reaches this size.
MAX_HEADS = 256
#: A kept connection idle this long (s) is asked of the kernel, before it is used again, whether
#: its end came in after the event loop last looked. Servers close idle connections after
#: seconds; under load connections come back within milliseconds and skip the system call.
IDLE_CHECK_S = 0.1
#: How long (s) before the upstream's ``Keep-Alive: timeout`` a kept connection is dropped (at
#: most half that timeout): the server's idle clock starts before ours, by the answer's way back.
KEEPALIVE_MARGIN_S = 1.0
#: The message of a connection closed after the request went out and before any answer.
CLOSED_UNANSWERED = ("the upstream closed the connection after the request was sent, before any answer{reason}; "
                     "not sent again, since it may have been read")


class ResponseHeaders(Mapping[str, str]):
    """An answer's headers; lookups accept any case. Repeated headers are joined with ", ".

    Kept as the parser gives them, bytes, names in lower case: a value is decoded when it
    is read. Upstreams send many headers (OpenAI's rate limits, Cloudflare's) and an
    adapter reads a few; decoding every name and value as it arrived was measurably
    slower than decoding the few an adapter reads (docs/performance.md, 'Measurements
    behind the code').
    """

    __slots__ = ("raw",)

    def __init__(self) -> None:
        self.raw: dict[bytes, bytes] = {}

    def get(self, key: str, default=None):
        value = self.raw.get(key.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")

    def __getitem__(self, key: str) -> str:
        return self.raw[key.lower().encode("latin-1")].decode("latin-1")

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower().encode("latin-1") in self.raw

    def __iter__(self) -> Iterator[str]:
        return (name.decode("latin-1") for name in self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        return f"ResponseHeaders({dict(self.items())!r})"


@functools.lru_cache(maxsize=64)
def keep_alive_timeout(value: bytes) -> float | None:
    """The ``timeout`` (s) of a Keep-Alive header's value (``timeout=5, max=100``); None if it has none.

    Kept per value: an upstream that sends it sends the same one on every answer.
    """
    for part in value.split(b","):
        name, _, number = part.partition(b"=")
        if name.strip().lower() == b"timeout":
            try:
                seconds = float(number)
            except ValueError:
                return None
            return seconds if seconds >= 0 else None  # not NaN either
    return None


def readable(fd: int) -> bool:
    """Something (data, an end, a reset) waits to be read on socket ``fd``; asks the kernel, not the loop."""
    if not hasattr(select, "poll"):  # Windows
        return bool(select.select([fd], [], [], 0)[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


@dataclass(frozen=True, slots=True)
class Target:
    """What a URL resolves to, worked out once per URL."""

    origin: tuple[str, str, int]  # scheme, host, port: the pool key
    host_header: str
    path: str  # path and query, as sent on the request line
    tls: bool


def parse_target(url: str) -> Target:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the URL is not http(s) or has no host")  # not shown: it may hold a key
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise ValueError("the URL's port is not a number") from None
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == (443 if tls else 80) else f"{shown}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target((parts.scheme, host, port), host_header, path, tls)


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection, carrying one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.fd = -1  # the socket's, to ask the kernel whether an idle connection is still open
        self.idle_since = 0.0
        self.expires = 0.0  # while idle: when it is no longer used
        self.paused = False
        self.waiter: asyncio.Future | None = None
        self.begin()

    def begin(self) -> None:
        """Forget the last answer; the next bytes start a new one."""
        self.hold = True  # pause reading past HIGH_WATER unread bytes (``chunks``); ``read`` wants it all
        if self.paused:
            self.resume()
        self.status = 0
        self.headers = ResponseHeaders()
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.framed = False  # the body's end is known (content-length or chunked), not the connection's close
        self.got_bytes = False
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.error: TransportError | None = None

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.fd = sock.fileno()

    def data_received(self, data: bytes) -> None:
        if self.complete:  # bytes after the answer, with no request out (a 408 before a close): not reused
            self.closed = True
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(TransportError("connection", f"the upstream's answer is not valid HTTP/1.1: {exc}"))
            self.abort()

    def eof_received(self) -> bool:
        self.closed = True  # at once: connection_lost comes a turn of the loop later
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.framed and not self.complete and self.error is None:
            self.complete = True  # a body that ends when the connection does
        elif not self.complete and not self.got_bytes:
            self.fail(TransportError("connection", CLOSED_UNANSWERED.format(reason=f" ({exc})" if exc else "")))
        elif not self.complete:
            reason = f": {exc}" if exc else ""
            self.fail(TransportError("connection", f"the upstream closed the connection{reason}"))
        self.wake()

    def pause_writing(self) -> None:  # requests are small: nothing to hold back
        pass

    def resume_writing(self) -> None:
        pass

    # ---------------------------------------------------------------- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        raw = self.headers.raw
        name = name.lower()
        raw[name] = value if name not in raw else raw[name] + b", " + value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        raw = self.headers.raw
        if b"content-length" in raw or b"transfer-encoding" in raw or self.status in (204, 304):
            self.framed = True
        self.wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.hold and self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self.wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.framed = True
        self.keep_alive = self.parser.should_keep_alive()
        self.wake()

    # ---------------------------------------------------------------- for the client and the response

    def fail(self, error: TransportError) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until something happens (data, end, failure); TransportError('timeout') after ``timeout`` s."""
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, self._timed_out, waiter, timeout)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None
        if waiter.result() is not None:
            raise waiter.result()

    def _timed_out(self, waiter: asyncio.Future, timeout: float) -> None:
        if not waiter.done():
            waiter.set_result(TransportError("timeout", f"no data from the upstream for {timeout:g} s"))

    def take_chunk(self) -> bytes:
        chunk = self.body.popleft()
        self.buffered -= len(chunk)
        if self.paused and self.buffered <= HIGH_WATER // 4:
            self.resume()
        return chunk

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and self.error is None and not self.closed

    def input_waiting(self) -> bool:
        """Something (an end, a reset, a stray byte) came in since the event loop last looked."""
        return self.fd >= 0 and readable(self.fd)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Response:
    """An answer whose headers are in; read the body, then ``release()`` (or ``async with``)."""

    def __init__(self, client: Http1Client, connection: Connection, target: Target, read_timeout: float) -> None:
        self._client = client
        self._connection = connection
        self._target = target
        self._read_timeout = read_timeout
        self._released = False
        self.status = connection.status
        self.headers = connection.headers

    async def read(self) -> bytes:
        """The rest of the body, at once."""
        connection = self._connection
        connection.hold = False
        if connection.paused:
            connection.resume()
        try:
            while not connection.complete:
                if connection.error is not None:
                    raise connection.error
                await connection.wait(self._read_timeout)
        except BaseException:
            self.release()
            raise
        body = b"".join(connection.body)
        connection.body.clear()
        connection.buffered = 0
        self.release()
        return body

    async def chunks(self):
        """The body in pieces as they arrive; raises TransportError after the pieces that came before a failure."""
        connection = self._connection
        try:
            while True:
                if connection.body:
                    yield connection.take_chunk()
                elif connection.error is not None:
                    raise connection.error
                elif connection.complete:
                    return
                else:
                    await connection.wait(self._read_timeout)
        finally:
            self.release()

    def release(self) -> None:
        """Give the connection back (kept if the answer was read to its end), else close it."""
        if not self._released:
            self._released = True
            self._client._put_back(self._target, self._connection)

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class Http1Client:
    """The ``http1`` transport (``transport.py``): pooled connections to any number of origins."""

    def __init__(self, *, max_connections: int = 1000, keepalive_s: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.keepalive_s = keepalive_s
        self._ssl = ssl_context
        self._targets: dict[str, Target] = {}
        self._heads: dict[tuple, tuple[bytes, bytes]] = {}  # (method, url, *headers) -> _head()
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def request(self, method: str, url: str, body: bytes, headers: dict[str, str], *,
                      read_timeout: float, connect_timeout: float) -> Response:
        """Send the request; return once the answer's status and headers are in.

        Raises TransportError; ValueError for a URL or header that cannot be sent.
        """
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = parse_target(url)
        key = (method, url, *headers.items())
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= MAX_HEADS:
                self._heads.clear()
            head = self._heads[key] = self._head(method, target, headers)
        message = b"%b%d\r\n%b%b" % (head[0], len(body), head[1], body)
        await self._slots.acquire()
        try:
            return await self._exchange(target, message, read_timeout, connect_timeout)
        except BaseException:
            self._slots.release()
            raise

    async def _exchange(self, target: Target, message: bytes, read_timeout: float,
                        connect_timeout: float) -> Response:
        while True:
            connection = self._take_idle(target.origin)  # seen open just now, with no await since
            reused = connection is not None
            if connection is None:
                connection = await self._connect(target, connect_timeout)
            connection.begin()
            transport = connection.transport
            transport.write(message)
            if transport.is_closing():  # the write failed: no byte of the request went out
                connection.abort()
                if reused:
                    continue
                raise TransportError("connection", "the upstream closed the new connection before the request "
                                                   "could be written")
            try:
                while not connection.headers_done:
                    if connection.error is not None:
                        raise connection.error  # after the write: never sent again here (see above)
                    await connection.wait(read_timeout)
            except BaseException:
                connection.abort()
                raise
            return Response(self, connection, target, read_timeout)

    @staticmethod
    def _head(method: str, target: Target, headers: dict[str, str]) -> tuple[bytes, bytes]:
        """The request's head, in two pieces around the content-length's digits. ``host`` and
        ``content-length`` are always the client's own (from the URL and the body); ``user-agent``
        and ``accept-encoding`` unless the caller gave them."""
        lines = [f"{method} {target.path} HTTP/1.1\r\nhost: {target.host_header}\r\ncontent-length: "]
        defaults = dict(DEFAULT_HEADERS)
        for name, value in headers.items():
            lower = name.lower()
            if lower in OWN_HEADERS:
                continue
            defaults.pop(lower, None)
            lines.append(f"{name}: {value}\r\n")
        lines += [f"{name}: {value}\r\n" for name, value in defaults.items()]
        lines.append("\r\n")
        first, rest = lines[0], "".join(lines[1:])
        # A line break inside a name or value would start a header of its own.
        ends = len(lines) - 1  # of header lines in ``rest``, the blank line included
        if first.count("\n") != 2 or first.count("\r") != 2 or not rest.count("\n") == rest.count("\r") == ends:
            raise ValueError("a request header name or value contains a line break")
        return first.encode("latin-1"), rest.encode("latin-1")

    def _take_idle(self, origin: tuple[str, str, int]) -> Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            # Open as far as the loop knows, and (idle a while) as far as the kernel knows: inline, as
            # this runs for every request.
            if (now < connection.expires and not connection.closed and not connection.transport.is_closing()
                    and (now - connection.idle_since < IDLE_CHECK_S or not connection.input_waiting())):
                return connection
            connection.abort()
        return None

    async def _connect(self, target: Target, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        scheme, host, port = target.origin
        tls = self._ssl_context() if target.tls else None
        try:
            _, connection = await asyncio.wait_for(loop.create_connection(
                lambda: Connection(loop), host, port, ssl=tls, server_hostname=host if tls else None), timeout)
        except asyncio.TimeoutError:
            raise TransportError("connect", f"cannot connect to {scheme}://{host}:{port} within {timeout:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise TransportError("connect", f"cannot connect to {scheme}://{host}:{port}: {exc}") from None
        return connection

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _put_back(self, target: Target, connection: Connection) -> None:
        self._slots.release()
        if connection.reusable and not self._closed:
            hint = connection.headers.raw.get(b"keep-alive")
            kept = self.keepalive_s if hint is None else self._kept_for(hint)
            if kept > 0:
                connection.idle_since = now = time.monotonic()
                connection.expires = now + kept
                self._idle.setdefault(target.origin, []).append(connection)
                return
        connection.abort()

    def _kept_for(self, hint: bytes) -> float:
        """How long (s) an idle connection is kept after an answer with a Keep-Alive header: until a
        margin before the upstream said it closes idle connections, never beyond ``keepalive_s``."""
        timeout = keep_alive_timeout(hint)
        if timeout is None:
            return self.keepalive_s
        return min(self.keepalive_s, timeout - min(KEEPALIVE_MARGIN_S, timeout / 2))

    async def close(self) -> None:
        """Close every kept connection; connections in use close when released."""
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.abort()
        self._idle.clear()
