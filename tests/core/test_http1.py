"""core/_upstream/http1.py, the gateway's HTTP/1.1 client, against scripted servers on loopback.

Every server here is an ``asyncio.start_server`` on 127.0.0.1 written in this module
that speaks raw HTTP/1.1 bytes, so each test decides exactly what goes on the wire:
an answer framed by content-length, chunked, or ended by the close; a stall; a close
at the worst moment; garbage. Nothing of the client is mocked. The last part drives
``modelbroker._upstream.client.UpstreamHTTP`` (errors as ProviderError, secrets masked) and its proxied
path through a small forward proxy written here.

Every wait is bounded: by the client's own timeouts, or ``asyncio.wait_for`` with
TIMEOUT (the test's side) or SERVER_IDLE (the servers' side).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import trustme

from modelbroker import __version__
from modelbroker._routing.types import ErrorKind, ProviderError
from modelbroker._upstream import http1
from modelbroker._upstream import sse as upstream
from modelbroker._upstream.client import UpstreamHTTP
from modelbroker._upstream.http1 import Http1Client, Response, parse_target
from modelbroker._upstream.transport import TransportError

#: Bound on every wait of a test for something that should happen (s).
TIMEOUT = 2.0
#: How long a server's connection waits for the client's next request before giving up (s).
SERVER_IDLE = 5.0
SECRET = "sk-http1-test-SECRET-0a1b2c3d4e5f6789"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
                   "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy set in the developer's shell must not reroute UpstreamHTTP's calls here."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# --- a scripted raw HTTP/1.1 server ---------------------------------------------------


@dataclass
class Request:
    """One request as the server read it off the wire."""

    line: str  # "POST /path HTTP/1.1"
    headers: list[tuple[str, str]]  # in order, names as sent
    body: bytes

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        """The one value of header ``name``; fails the test if it was sent more than once."""
        values = self.values(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None


class Peer:
    """The server's side of one accepted connection."""

    def __init__(self, server: Server, number: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.number = number
        self.reader = reader
        self.writer = writer

    async def request(self) -> Request | None:
        """The next request (recorded in ``server.requests``); None once the client closed."""
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), SERVER_IDLE)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if getattr(exc, "partial", None):
                raise  # closed in the middle of a request
            self.server.eofs.add(self.number)
            return None
        line, *fields = head.decode("latin-1").split("\r\n")[:-2]
        headers = [(name, value.strip()) for name, _, value in (field.partition(":") for field in fields)]
        request = Request(line, headers, b"")
        length = int(request.header("content-length") or 0)
        request.body = await asyncio.wait_for(self.reader.readexactly(length), SERVER_IDLE)
        self.server.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), SERVER_IDLE)

    async def until_closed(self) -> None:
        """Read and drop whatever comes until the client closes (bounded)."""
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(self.reader.read(), SERVER_IDLE)
        self.server.eofs.add(self.number)


Handler = Callable[[Peer], Awaitable[None]]


class Server:
    """``async with Server(handler) as server``: ``handler(peer)`` scripts each accepted connection.

    Counts accepted connections, records every request read through ``peer.request()``
    and which connections the client closed (``eofs``). A handler's own failure (say, an
    assertion) is raised again when the ``async with`` ends, not lost in a server task.
    """

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None) -> None:
        self._handler = handler
        self._tls = tls
        self._tasks: set[asyncio.Task] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.connections = 0
        self.requests: list[Request] = []
        self.eofs: set[int] = set()
        self.errors: list[Exception] = []
        self.port = 0

    def url(self, path: str = "/v1/chat/completions") -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop every handler: drop its connection, cancel it. Cancelling is repeated: Python 3.11's
        ``asyncio.wait_for`` drops a cancellation that arrives as the awaited thing completes."""
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        deadline = time.monotonic() + TIMEOUT
        while pending := [task for task in self._tasks if not task.done()]:
            assert time.monotonic() < deadline, f"server handlers still running: {pending}"
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.05)
        await asyncio.wait_for(self._server.wait_closed(), TIMEOUT)
        if self.errors and exc[0] is None:
            raise self.errors[0]

    async def wait_eof(self, number: int) -> None:
        """Until the client has closed connection ``number`` (fails the test after TIMEOUT)."""
        deadline = time.monotonic() + TIMEOUT
        while number not in self.eofs:
            assert time.monotonic() < deadline, f"the client did not close connection {number}"
            await asyncio.sleep(0.01)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())
        self._writers.append(writer)
        peer = Peer(self, self.connections, reader, writer)
        self.connections += 1
        try:
            await self._handler(peer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass  # the client went away, or this handler's bounded wait ran out
        except asyncio.CancelledError:
            pass  # the test is over (returning normally keeps asyncio from logging it)
        except Exception as exc:
            self.errors.append(exc)
        finally:
            writer.close()


class ThreadServer:
    """``with ThreadServer(handle) as server``: blocking sockets on a thread of their own, so that a
    connection can be closed while the test's event loop is not running (its end then waits in the
    kernel, unseen by the loop). ``handle(number, sock)`` scripts each accepted connection, one
    after another; a handler's failure is raised again when the ``with`` ends. Every wait is bounded."""

    def __init__(self, handle: Callable[[int, socket.socket], None]) -> None:
        self._handle = handle
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._open: socket.socket | None = None
        self.connections = 0
        self.errors: list[BaseException] = []

    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1/chat/completions"

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._open is not None:
            with contextlib.suppress(OSError):
                self._open.shutdown(socket.SHUT_RDWR)  # ends a wait in recv
        self._thread.join(TIMEOUT + SERVER_IDLE)
        self._listener.close()
        assert not self._thread.is_alive(), "the server thread did not end"
        if self.errors and exc[0] is None:
            raise self.errors[0]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            number, self.connections = self.connections, self.connections + 1
            sock.settimeout(SERVER_IDLE)
            self._open = sock
            try:
                self._handle(number, sock)
                with contextlib.suppress(OSError):
                    while not self._stop.is_set() and sock.recv(65536):  # until the client closes
                        pass
            except OSError:
                pass  # the client went away
            except BaseException as exc:  # raised again when the test ends
                self.errors.append(exc)
            finally:
                sock.close()


def read_request(sock: socket.socket) -> bytes:
    """One request off a blocking socket (bounded by its timeout); the body."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, "the client closed the connection before a whole request"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    [length] = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    while len(body) < length:
        piece = sock.recv(65536)
        assert piece, "the client closed the connection in the middle of a request body"
        body += piece
    return body


def answer(body: bytes = b'{"ok": true}', *, status: str = "200 OK", headers: str = "",
           version: str = "HTTP/1.1", length: bool = True) -> bytes:
    """A whole answer; ``headers`` is extra header lines ("name: value\\r\\n" each)."""
    framing = f"content-length: {len(body)}\r\n" if length else ""
    return f"{version} {status}\r\n{framing}{headers}\r\n".encode("latin-1") + body


def chunk(piece: bytes) -> bytes:
    """One piece of a chunked body (``chunk(b"")`` is the last)."""
    return b"%x\r\n%s\r\n" % (len(piece), piece)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def serving(reply: bytes | Callable[[Request], bytes] = answer()) -> Handler:
    """A handler answering every request on its connection with ``reply`` (or ``reply(request)``)."""

    async def handle(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            await peer.send(reply(request) if callable(reply) else reply)

    return handle


def echo(request: Request) -> bytes:
    return answer(request.body)


@contextlib.asynccontextmanager
async def make_client(**options: object) -> AsyncIterator[Http1Client]:
    client = Http1Client(**options)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def client() -> AsyncIterator[Http1Client]:
    async with make_client() as client:
        yield client


async def post(client: Http1Client, url: str, body: bytes = b"{}", headers: dict[str, str] | None = None, *,
               read_timeout: float = TIMEOUT, connect_timeout: float = TIMEOUT) -> Response:
    return await client.request("POST", url, body, headers or {}, read_timeout=read_timeout,
                                connect_timeout=connect_timeout)


async def fetch(client: Http1Client, url: str, body: bytes = b"{}", **options: float) -> bytes:
    """POST and read the whole body."""
    return await (await post(client, url, body, **options)).read()


# --- one answer, as sent and as received ---------------------------------------------


async def test_json_answer_and_the_request_on_the_wire(client: Http1Client) -> None:
    reply = b'{"id": "x", "choices": []}'
    extra = "Content-Type: application/json\r\nX-Request-Id: r-1\r\nX-Rep: a\r\nX-Rep: b\r\n"
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    async with Server(serving(answer(reply, headers=extra))) as server:
        response = await post(client, server.url("/v1/chat/completions?x=1"), body,
                              {"content-type": "application/json", "authorization": "Bearer k-1"})
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["CONTENT-TYPE"] == response.headers.get("Content-Type") == "application/json"
        assert "x-request-id" in response.headers and "X-REQUEST-ID" in response.headers
        assert response.headers.get("x-rep") == "a, b"  # a repeated header, joined
        assert response.headers.get("missing") is None and "missing" not in response.headers
        assert dict(response.headers) == {"content-length": str(len(reply)), "content-type": "application/json",
                                          "x-request-id": "r-1", "x-rep": "a, b"}  # a Mapping, names in lower case
        assert json.loads(await response.read()) == {"id": "x", "choices": []}

    [request] = server.requests
    assert request.line == "POST /v1/chat/completions?x=1 HTTP/1.1"
    assert request.header("host") == f"127.0.0.1:{server.port}"
    assert request.header("content-length") == str(len(body))
    assert request.header("content-type") == "application/json"
    assert request.header("authorization") == "Bearer k-1"
    assert request.header("user-agent") == f"modelbroker/{__version__}"
    assert request.header("accept-encoding") == "identity"
    assert request.body == body
    assert sorted(name.lower() for name, _ in request.headers) == sorted(
        ["host", "content-length", "content-type", "authorization", "user-agent", "accept-encoding"])


async def test_the_callers_user_agent_replaces_the_default(client: Http1Client) -> None:
    async with Server(serving()) as server:
        await (await post(client, server.url(), b"{}", {"user-agent": "plugin/2.0"})).read()
    assert server.requests[0].values("user-agent") == ["plugin/2.0"]


async def test_a_user_agent_given_in_another_case_is_not_sent_twice(client: Http1Client) -> None:
    async with Server(serving()) as server:
        await (await post(client, server.url(), b"{}", {"User-Agent": "plugin/2.0"})).read()
    assert server.requests[0].values("user-agent") == ["plugin/2.0"]


async def test_the_callers_host_and_content_length_give_way_to_the_clients_own(client: Http1Client) -> None:
    """Two content-lengths would make the server refuse the request; host comes from the URL."""
    extra = {"Host": "elsewhere.example", "Content-Length": "999", "Accept-Encoding": "gzip"}
    async with Server(serving()) as server:
        await (await post(client, server.url(), b"{}", extra)).read()
    [request] = server.requests
    assert request.values("host") == [f"127.0.0.1:{server.port}"]
    assert request.values("content-length") == ["2"]
    assert request.values("accept-encoding") == ["gzip"]


async def test_request_heads_are_kept_and_each_request_gets_its_own_length_and_headers(
        client: Http1Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The head is built once per (method, URL, headers): bodies of other lengths and other headers
    still go out right, and a caller sending new headers every time cannot grow the table past its bound."""
    monkeypatch.setattr(http1, "MAX_HEADS", 3)
    bodies = [b"{}", b'{"a": 1}', b"{}" * 50, b'{"a": 1}']
    async with Server(serving(echo)) as server:
        for number, body in enumerate(bodies):
            await (await post(client, server.url(), body, {"x-n": str(number % 2)})).read()
        assert len(client._heads) == 2
        for number in range(10):
            await (await post(client, server.url(), b"{}", {"x-unique": str(number)})).read()
            assert len(client._heads) <= 3
    sent = server.requests
    assert [request.body for request in sent[:4]] == bodies
    assert [request.header("content-length") for request in sent[:4]] == [str(len(b)) for b in bodies]
    assert [request.header("x-n") for request in sent[:4]] == ["0", "1", "0", "1"]
    assert [request.header("x-unique") for request in sent[4:]] == [str(n) for n in range(10)]
    assert all(request.header("x-n") is None for request in sent[4:])


async def test_an_answer_arriving_one_byte_at_a_time(client: Http1Client) -> None:
    """Headers split anywhere (inside a name, a value, the blank line) are put together."""
    whole = answer(b'{"n": 1}', headers="Content-Type: application/json\r\nX-Long-Header: " + "v" * 40 + "\r\n")

    async def handle(peer: Peer) -> None:
        await peer.request()
        for i in range(len(whole)):
            await peer.send(whole[i:i + 1])
            await asyncio.sleep(0)
        await peer.until_closed()

    async with Server(handle) as server:
        response = await post(client, server.url())
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-long-header"] == "v" * 40
        assert await response.read() == b'{"n": 1}'


async def test_a_204_answer_has_no_body_and_keeps_the_connection(client: Http1Client) -> None:
    async with Server(serving(answer(b"", status="204 No Content", length=False))) as server:
        for _ in range(2):
            response = await post(client, server.url())
            assert response.status == 204
            assert await response.read() == b""
    assert server.connections == 1


def test_parse_target() -> None:
    target = parse_target("https://api.example.com/v1/chat")
    assert target.origin == ("https", "api.example.com", 443) and target.tls
    assert target.host_header == "api.example.com" and target.path == "/v1/chat"
    target = parse_target("http://[::1]:8080/a?b=1")
    assert target.origin == ("http", "::1", 8080) and not target.tls
    assert target.host_header == "[::1]:8080" and target.path == "/a?b=1"
    assert parse_target("http://host").path == "/"
    assert parse_target("http://host:80/").host_header == "host"
    for bad in ("ftp://host/x", "http:///path", "/relative"):
        with pytest.raises(ValueError):
            parse_target(bad)


# --- keep-alive and the pool ---------------------------------------------------------


async def test_sequential_requests_share_one_connection(client: Http1Client) -> None:
    async with Server(serving(echo)) as server:
        for i in range(20):
            assert await fetch(client, server.url(), b"request %d" % i) == b"request %d" % i
    assert len(server.requests) == 20
    assert server.connections == 1


async def test_concurrent_requests_then_the_pool_reuses_their_connections(client: Http1Client) -> None:
    all_in = asyncio.Event()

    async def handle(peer: Peer) -> None:
        """Answer only once all 10 requests are in: they must really be in flight together."""
        while (request := await peer.request()) is not None:
            if len(peer.server.requests) >= 10:
                all_in.set()
            await asyncio.wait_for(all_in.wait(), TIMEOUT)
            await peer.send(echo(request))

    async with Server(handle) as server:
        bodies = [b"call %d" % i for i in range(10)]
        replies = await asyncio.gather(*(fetch(client, server.url(), body) for body in bodies))
        assert replies == bodies
        assert server.connections == 10

        again = await asyncio.gather(*(fetch(client, server.url(), body) for body in bodies))
        assert again == bodies
        assert server.connections == 10  # all 10 kept connections were used again
        assert len(server.requests) == 20


async def test_max_connections_a_third_request_waits_for_a_release() -> None:
    log: list[str] = []

    async def handle(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            log.append(f"server got {request.body.decode()}")
            await peer.send(echo(request))

    async with Server(handle) as server, make_client(max_connections=2) as client:
        first = await post(client, server.url(), b"1")
        second = await post(client, server.url(), b"2")
        third = asyncio.create_task(post(client, server.url(), b"3"))
        await asyncio.sleep(0.2)  # time enough for the third to go out, were it allowed to
        assert not third.done()
        assert log == ["server got 1", "server got 2"]

        log.append("first released")
        first.release()
        response = await asyncio.wait_for(third, TIMEOUT)
        assert await response.read() == b"3"
        assert log == ["server got 1", "server got 2", "first released", "server got 3"]
        assert await second.read() == b"2"


async def test_a_connection_idle_beyond_keepalive_s_is_not_reused() -> None:
    async with Server(serving()) as server, make_client(keepalive_s=0.2) as client:
        await fetch(client, server.url())
        await asyncio.sleep(0.05)
        await fetch(client, server.url())
        assert server.connections == 1  # within keepalive_s: reused

        await asyncio.sleep(0.3)
        await fetch(client, server.url())
        assert server.connections == 2  # idle too long: a new one
        await server.wait_eof(0)  # and the old one was closed


@pytest.mark.parametrize(("hint", "kept_s"), [
    (b"timeout=5, max=100", 4.0),  # a second before the upstream's 5 s
    (b"max=100, Timeout = 5", 4.0),
    (b"timeout=1", 0.5),  # at most half of it
    (b"timeout=0", 0.0),  # not kept at all
    (b"timeout=300", 30.0),  # never beyond keepalive_s
    (b"max=100", 30.0),
    (b"timeout=soon", 30.0),
    (b"timeout=-1", 30.0),
    (b"timeout=nan", 30.0),
])
def test_how_long_a_keep_alive_header_keeps_a_connection(hint: bytes, kept_s: float) -> None:
    assert Http1Client(keepalive_s=30.0)._kept_for(hint) == kept_s


async def test_a_kept_connection_is_dropped_before_the_upstreams_keep_alive_timeout() -> None:
    """The upstream closes idle connections after 1 s (``Keep-Alive: timeout=1``): the client keeps one
    0.5 s, not its own 30 s, then closes it and opens another."""
    reply = answer(headers="Keep-Alive: timeout=1, max=100\r\n")
    async with Server(serving(reply)) as server, make_client(keepalive_s=30.0) as client:
        await fetch(client, server.url())
        await asyncio.sleep(0.2)
        await fetch(client, server.url())
        assert server.connections == 1  # within 0.5 s: reused

        await asyncio.sleep(0.6)
        await fetch(client, server.url())
        assert server.connections == 2  # past 0.5 s: a new one
        await server.wait_eof(0)  # and the client closed the old one


async def test_keep_alive_timeout_0_means_a_connection_per_request() -> None:
    async with Server(serving(answer(headers="Keep-Alive: timeout=0\r\n"))) as server, make_client() as client:
        await fetch(client, server.url())
        await server.wait_eof(0)  # closed as soon as the answer was read
        await fetch(client, server.url())
    assert server.connections == 2


async def test_close_closes_the_kept_connections() -> None:
    async with Server(serving()) as server:
        async with make_client() as client:
            await fetch(client, server.url())
            assert not server.eofs
        await server.wait_eof(0)


async def test_release_before_the_end_of_the_body_closes_the_connection_and_frees_the_slot() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart")
        await peer.until_closed()

    async with Server(handle) as server, make_client(max_connections=1) as client:
        async with await post(client, server.url()) as response:
            assert response.status == 200
        await server.wait_eof(0)
        # The one slot is free again: the next request goes out at once.
        response = await asyncio.wait_for(post(client, server.url()), TIMEOUT)
        response.release()
        assert server.connections == 2


async def test_a_cancelled_request_frees_its_slot_and_closes_its_connection() -> None:
    async def handle(peer: Peer) -> None:
        if peer.number == 0:
            await peer.request()
            await peer.until_closed()  # never answers
        else:
            await serving()(peer)

    async with Server(handle) as server, make_client(max_connections=1) as client:
        stuck = asyncio.create_task(post(client, server.url()))
        await asyncio.sleep(0.1)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(stuck, TIMEOUT)
        await server.wait_eof(0)
        assert await asyncio.wait_for(fetch(client, server.url()), TIMEOUT) == b'{"ok": true}'


# --- how the body ends ---------------------------------------------------------------


async def test_a_chunked_answer_read_whole(client: Http1Client) -> None:
    pieces = [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]
    reply = CHUNKED_HEAD + b"".join(chunk(piece) for piece in pieces) + chunk(b"")
    async with Server(serving(reply)) as server:
        for _ in range(2):
            response = await post(client, server.url())
            assert response.headers["transfer-encoding"] == "chunked"
            assert await response.read() == b"".join(pieces)
    assert server.connections == 1  # chunked framing: the connection is kept


async def test_chunks_are_given_as_they_arrive(client: Http1Client) -> None:
    """The server holds its last piece back until the client has the first one in hand."""
    log: list[str] = []
    first_received = asyncio.Event()

    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + chunk(b"one "))
        for piece in (b"two ", b"three "):
            await asyncio.sleep(0.02)
            await peer.send(chunk(piece))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(first_received.wait(), TIMEOUT)
        log.append("server sends the last piece")
        await peer.send(chunk(b"four") + chunk(b""))
        await peer.until_closed()

    async with Server(handle) as server:
        response = await post(client, server.url())
        received = []
        async for piece in response.chunks():
            if not received:
                log.append("client has the first piece")
                first_received.set()
            received.append(piece)
    assert b"".join(received) == b"one two three four"
    assert log == ["client has the first piece", "server sends the last piece"]


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
async def test_a_body_ended_by_the_close_is_read_whole_and_not_reused(client: Http1Client, version: str) -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(f"{version} 200 OK\r\ncontent-type: text/plain\r\n\r\nfirst part, ".encode())
        await asyncio.sleep(0.05)
        await peer.send(b"second part")
        # returning closes the connection: that is the end of the body

    async with Server(handle) as server:
        assert await fetch(client, server.url()) == b"first part, second part"
        response = await post(client, server.url())
        assert await response.read() == b"first part, second part"
    assert server.connections == 2


async def test_connection_close_from_the_server_means_a_new_connection(client: Http1Client) -> None:
    """The server keeps serving on the connection: only the header tells the client to drop it."""
    async with Server(serving(answer(headers="Connection: close\r\n"))) as server:
        await fetch(client, server.url())
        await fetch(client, server.url())
        assert server.connections == 2
        await server.wait_eof(0)


# --- broken connections --------------------------------------------------------------


async def test_a_kept_connection_the_server_closed_while_idle(client: Http1Client) -> None:
    closed = asyncio.Event()

    async def handle(peer: Peer) -> None:
        if peer.number == 0:
            await peer.request()
            await peer.send(answer(b"first"))
            peer.writer.close()  # without reading anything more
            closed.set()
        else:
            await serving(answer(b"second"))(peer)

    async with Server(handle) as server:
        assert await fetch(client, server.url()) == b"first"
        await asyncio.wait_for(closed.wait(), TIMEOUT)
        await asyncio.sleep(0.05)
        assert await fetch(client, server.url()) == b"second"
    assert server.connections == 2


@pytest.mark.parametrize("reads", ["the-request", "one-byte"])
async def test_a_kept_connection_closed_after_the_request_went_out_is_not_sent_again(client: Http1Client,
                                                                                       reads: str) -> None:
    """The upstream had the request (all of it, or its first byte) and closed without answering: it may
    have the prompt in the works, and bill it. The request reached it once; the client raises."""
    reached_the_old_connection = []

    async def handle(peer: Peer) -> None:
        if peer.number == 0:
            await peer.request()
            await peer.send(answer(b"first"))
            if reads == "the-request":
                reached_the_old_connection.append((await peer.request()).body)
            else:
                reached_the_old_connection.append(await asyncio.wait_for(peer.reader.read(1), SERVER_IDLE))
            # returning closes the connection with the request unanswered
        else:
            await serving(answer(b"second"))(peer)

    async with Server(handle) as server:
        assert await fetch(client, server.url()) == b"first"
        with pytest.raises(TransportError) as failure:
            await post(client, server.url(), b"the prompt")
        await asyncio.sleep(0.1)  # time for a second connection, were one made
    assert reached_the_old_connection == [b"the prompt" if reads == "the-request" else b"P"]
    assert server.connections == 1
    assert failure.value.kind == "connection"
    message = str(failure.value)  # with the reset's words when the close was a reset
    assert message.startswith("the upstream closed the connection after the request was sent, before any answer")
    assert message.endswith("; not sent again, since it may have been read")


async def test_a_kept_connection_the_server_closed_unseen_by_the_loop_is_found_closed_before_the_write(
        client: Http1Client) -> None:
    """The server closes the idle connection while the client's event loop is not running, so the end
    waits in the kernel, not yet seen by the loop: the client asks the kernel before writing, and the
    request goes out once, on a new connection."""
    close_now, closed = threading.Event(), threading.Event()
    bodies = []

    def handle(number: int, sock: socket.socket) -> None:
        bodies.append(read_request(sock))
        sock.sendall(answer(b"first" if number == 0 else b"second"))
        if number == 0:
            assert close_now.wait(TIMEOUT)
            sock.close()
            closed.set()

    with ThreadServer(handle) as server:
        assert await fetch(client, server.url()) == b"first"
        await asyncio.sleep(http1.IDLE_CHECK_S + 0.05)  # idle long enough to be asked of the kernel
        close_now.set()
        assert closed.wait(TIMEOUT)  # blocking: the loop does not run
        time.sleep(0.05)  # the end crosses loopback, into the kernel's queue
        assert await fetch(client, server.url(), b"next") == b"second"
    assert bodies == [b"{}", b"next"]  # one on each connection
    assert server.connections == 2


async def test_a_kept_connection_reset_before_the_write_is_retried_on_a_new_one(
        client: Http1Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel is not asked (as for a connection back in the pool a moment ago) and the server has
    reset the connection: the write fails at once, so no byte of the request left, and it goes out on
    a new connection."""
    monkeypatch.setattr(http1, "IDLE_CHECK_S", 60.0)
    reset_now, reset = threading.Event(), threading.Event()
    bodies = []

    def handle(number: int, sock: socket.socket) -> None:
        bodies.append(read_request(sock))
        sock.sendall(answer(b"first" if number == 0 else b"second"))
        if number == 0:
            assert reset_now.wait(TIMEOUT)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # with SO_LINGER 0: a reset, not an end
            reset.set()

    with ThreadServer(handle) as server:
        assert await fetch(client, server.url()) == b"first"
        reset_now.set()
        assert reset.wait(TIMEOUT)  # blocking: the loop does not run
        time.sleep(0.05)
        assert await fetch(client, server.url(), b"next") == b"second"
    assert bodies == [b"{}", b"next"]  # one on each connection
    assert server.connections == 2


async def test_bytes_on_an_idle_connection_mean_it_is_not_reused(client: Http1Client) -> None:
    """Some servers send a 408 on an idle connection before they close it: nothing of the next
    request goes there."""

    async def handle(peer: Peer) -> None:
        if peer.number == 0:
            await peer.request()
            await peer.send(answer(b"first"))
            await peer.send(answer(b"", status="408 Request Timeout", headers="connection: close\r\n"))
            await peer.until_closed()  # never answers the next request
        else:
            await serving(answer(b"second"))(peer)

    async with Server(handle) as server:
        assert await fetch(client, server.url()) == b"first"
        await asyncio.sleep(0.05)  # the 408 comes in
        assert await fetch(client, server.url()) == b"second"
        await server.wait_eof(0)
    assert len(server.requests) == 2
    assert server.connections == 2


async def test_a_kept_connection_that_breaks_after_part_of_an_answer_is_not_retried(client: Http1Client) -> None:
    """Answer bytes came back: the server did read the request, so sending it again is not safe."""

    async def handle(peer: Peer) -> None:
        if peer.number == 0:
            await peer.request()
            await peer.send(answer(b"first"))
            await peer.request()
            await peer.send(b"HTTP/1.1 200 OK\r\ncontent-le")  # then the close
        else:
            await serving(answer(b"second"))(peer)

    async with Server(handle) as server:
        assert await fetch(client, server.url()) == b"first"
        with pytest.raises(TransportError) as failure:
            await post(client, server.url())
    assert failure.value.kind == "connection"
    assert server.connections == 1


async def test_a_new_connection_closed_before_any_answer_is_not_retried(client: Http1Client) -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()  # and close without answering

    async with Server(handle) as server:
        with pytest.raises(TransportError) as failure:
            await post(client, server.url())
    assert failure.value.kind == "connection"
    assert server.connections == 1


async def cut_mid_body(peer: Peer) -> None:
    """Headers promising 100 bytes, 10 of them, then the close."""
    await peer.request()
    await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")


async def test_a_close_mid_body_fails_read(client: Http1Client) -> None:
    async with Server(cut_mid_body) as server:
        response = await post(client, server.url())
        assert response.status == 200
        with pytest.raises(TransportError) as failure:
            await response.read()
    assert failure.value.kind == "connection"
    assert server.connections == 1  # a failure after answer bytes came is not retried


async def test_a_close_mid_body_gives_the_pieces_before_the_failure(client: Http1Client) -> None:
    async with Server(cut_mid_body) as server:
        response = await post(client, server.url())
        received = []
        with pytest.raises(TransportError) as failure:
            async for piece in response.chunks():
                received.append(piece)
    assert failure.value.kind == "connection"
    assert b"".join(received) == b"0123456789"


# --- timeouts ------------------------------------------------------------------------


async def never_answer(peer: Peer) -> None:
    await peer.request()
    await peer.until_closed()


async def test_no_answer_times_out_after_read_timeout(client: Http1Client) -> None:
    async with Server(never_answer) as server:
        started = time.monotonic()
        with pytest.raises(TransportError) as failure:
            await post(client, server.url(), read_timeout=0.3)
        elapsed = time.monotonic() - started
        await server.wait_eof(0)  # the client dropped the connection
    assert failure.value.kind == "timeout"
    assert "0.3 s" in str(failure.value)
    assert 0.28 <= elapsed < 1.5


async def test_a_timeout_on_a_kept_connection_is_not_retried(client: Http1Client) -> None:
    """Silence is not a closed connection: the request may be in the works, so it is not sent again."""

    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"first"))
        await never_answer(peer)

    async with Server(handle) as server:
        assert await fetch(client, server.url()) == b"first"
        with pytest.raises(TransportError) as failure:
            await post(client, server.url(), read_timeout=0.2)
    assert failure.value.kind == "timeout"
    assert server.connections == 1
    assert len(server.requests) == 2


async def test_a_stall_mid_body_times_out(client: Http1Client) -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await peer.until_closed()

    async with Server(handle) as server:
        response = await post(client, server.url(), read_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TransportError) as failure:
            await response.read()
        elapsed = time.monotonic() - started

        response = await post(client, server.url(), read_timeout=0.3)
        received = []
        with pytest.raises(TransportError) as failure_in_chunks:
            async for piece in response.chunks():
                received.append(piece)
    assert failure.value.kind == failure_in_chunks.value.kind == "timeout"
    assert 0.28 <= elapsed < 1.5
    assert b"".join(received) == b"abc"
    assert server.connections == 2  # the timed-out connection was not kept


@pytest.mark.parametrize("how", ["read", "chunks"])
async def test_read_timeout_bounds_each_wait_not_the_whole_answer(client: Http1Client, how: str) -> None:
    """A piece every 0.1 s for 0.6 s with read_timeout 0.3: slow, but never silent for 0.3 s."""

    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD)
        for i in range(6):
            await asyncio.sleep(0.1)
            await peer.send(chunk(b"%d," % i))
        await peer.send(chunk(b""))
        await peer.until_closed()

    async with Server(handle) as server:
        started = time.monotonic()
        response = await post(client, server.url(), read_timeout=0.3)
        if how == "read":
            body = await response.read()
        else:
            body = b"".join([piece async for piece in response.chunks()])
        elapsed = time.monotonic() - started
    assert body == b"0,1,2,3,4,5,"
    assert elapsed >= 0.55  # the whole answer took longer than read_timeout


async def test_connect_refused_names_host_and_port(client: Http1Client, closed_port_url: str) -> None:
    port = closed_port_url.split(":")[2].split("/")[0]
    with pytest.raises(TransportError) as failure:
        await post(client, closed_port_url)
    assert failure.value.kind == "connect"
    assert f"127.0.0.1:{port}" in str(failure.value)


async def test_a_tls_handshake_that_never_comes_is_a_connect_timeout(client: Http1Client) -> None:
    """A TCP server that accepts and says nothing: the TLS handshake counts against connect_timeout."""
    async with Server(Peer.until_closed) as server:
        url = server.url().replace("http://", "https://")
        started = time.monotonic()
        with pytest.raises(TransportError) as failure:
            await post(client, url, connect_timeout=0.3)
        elapsed = time.monotonic() - started
    assert failure.value.kind == "connect"
    assert f"127.0.0.1:{server.port}" in str(failure.value) and "0.3 s" in str(failure.value)
    assert 0.28 <= elapsed < 1.5


# --- what cannot be sent, what cannot be read ----------------------------------------


@pytest.mark.parametrize("reply", [
    pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", id="not-http"),
    pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n", id="bad-content-length"),
    pytest.param(b"HTTP/1.1 2000 OK\r\n\r\n", id="bad-status"),
])
async def test_an_answer_that_is_not_http_fails_as_connection(client: Http1Client, reply: bytes) -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(reply)
        await peer.until_closed()

    async with Server(handle) as server:
        with pytest.raises(TransportError) as failure:
            await post(client, server.url())
    assert failure.value.kind == "connection"
    assert "not valid HTTP" in str(failure.value)


async def test_a_bad_chunk_mid_body_fails_read_as_connection(client: Http1Client) -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + chunk(b"fine") + b"zz\r\nnot a chunk size\r\n")
        await peer.until_closed()

    async with Server(handle) as server:
        response = await post(client, server.url())
        with pytest.raises(TransportError) as failure:
            await response.read()
    assert failure.value.kind == "connection"


@pytest.mark.parametrize(("name", "value"), [
    pytest.param("x-note", "a\r\nx-injected: 1", id="crlf-in-value"),
    pytest.param("x-note", "a\nx-injected: 1", id="lf-in-value"),
    pytest.param("x-note", "a\rb", id="cr-in-value"),
    pytest.param("x-injected: 1\r\nx-note", "v", id="crlf-in-name"),
])
async def test_a_line_break_in_a_header_raises_before_anything_is_sent(name: str, value: str) -> None:
    async with Server(serving()) as server, make_client(max_connections=1) as client:
        with pytest.raises(ValueError, match="line break"):
            await post(client, server.url(), b"{}", {"authorization": "Bearer k", name: value})
        await asyncio.sleep(0.05)
        assert server.connections == 0
        # Nothing was taken: the one slot is still free.
        assert await asyncio.wait_for(fetch(client, server.url()), TIMEOUT) == b'{"ok": true}'
    assert [request.header("x-injected") for request in server.requests] == [None]


# --- back-pressure -------------------------------------------------------------------


async def test_a_large_body_read_slowly_arrives_whole_and_in_order(client: Http1Client) -> None:
    """16 MiB, more than the kernel's socket buffers hold: while the client does not read, the
    server cannot finish writing (the client paused reading); nothing is lost on resuming."""
    body = random.Random(7).randbytes(16 << 20)
    servers_writer: list[asyncio.StreamWriter] = []

    async def handle(peer: Peer) -> None:
        servers_writer.append(peer.writer)
        await serving(answer(body, headers="content-type: application/octet-stream\r\n"))(peer)

    async with Server(handle) as server:
        response = await post(client, server.url())
        await asyncio.sleep(0.3)  # the client reads nothing for a while
        assert servers_writer[0].transport.get_write_buffer_size() > 0, "the client did not hold the server back"
        received = []
        async for piece in response.chunks():
            received.append(piece)
            await asyncio.sleep(0.001)
        assert len(received) > 1
        assert b"".join(received) == body
        # Reading resumed for good: the same connection carries the next answer.
        response = await post(client, server.url())
        assert sum([len(piece) async for piece in response.chunks()]) == len(body)
    assert server.connections == 1


async def test_a_large_body_read_whole(client: Http1Client) -> None:
    body = random.Random(8).randbytes(1 << 20)
    async with Server(serving(answer(body))) as server:
        assert await fetch(client, server.url(), read_timeout=0.5) == body


async def test_a_connection_reused_after_reading_a_body_just_over_the_high_water_mark(client: Http1Client) -> None:
    body = random.Random(9).randbytes(300_000)

    async def handle(peer: Peer) -> None:
        while await peer.request() is not None:
            whole = answer(body)
            await peer.send(whole[:250_000])  # under the mark: read on
            await asyncio.sleep(0.05)
            await peer.send(whole[250_000:])  # over it, and the end of the answer

    async with Server(handle) as server:
        assert await fetch(client, server.url(), read_timeout=0.5) == body
        assert await fetch(client, server.url(), read_timeout=0.5) == body


# --- TLS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_https_with_a_trusted_certificate(certificate_authority: trustme.CA,
                                                server_tls: ssl.SSLContext) -> None:
    trusting = ssl.create_default_context()
    certificate_authority.configure_trust(trusting)
    async with Server(serving(echo), tls=server_tls) as server, make_client(ssl_context=trusting) as client:
        assert server.url().startswith("https://")
        assert await fetch(client, server.url(), b"over tls 1") == b"over tls 1"
        response = await post(client, server.url(), b"over tls 2")
        assert b"".join([piece async for piece in response.chunks()]) == b"over tls 2"
    assert server.connections == 1
    assert server.requests[0].header("host") == f"127.0.0.1:{server.port}"


@pytest.mark.parametrize("trust", ["another-ca", "system-store"])
async def test_https_with_an_untrusted_certificate_fails_to_connect(server_tls: ssl.SSLContext,
                                                                     trust: str) -> None:
    if trust == "another-ca":
        context: ssl.SSLContext | None = ssl.create_default_context()
        trustme.CA().configure_trust(context)
    else:
        context = None  # the client's default: the system's certificates
    async with Server(serving(), tls=server_tls) as server, make_client(ssl_context=context) as client:
        with pytest.raises(TransportError) as failure:
            await post(client, server.url())
    assert failure.value.kind == "connect"
    assert "certificate" in str(failure.value).lower()
    assert not server.requests


# --- through modelbroker._upstream.client.UpstreamHTTP --------------------------------------------------


async def upstream_post(http: UpstreamHTTP, url: str, headers: dict[str, str] | None = None, **options: float):
    options.setdefault("timeout_s", TIMEOUT)
    options.setdefault("connect_timeout_s", TIMEOUT)
    return await http.post(url, b'{"model": "m"}', headers or {"authorization": f"Bearer {SECRET}"},
                           secret=SECRET, **options)


def assert_no_secret(text: str) -> None:
    assert SECRET not in text and SECRET[:12] not in text


async def test_upstream_http_reply() -> None:
    async with Server(serving(answer(b'{"id": 1}', headers="Content-Type: application/json\r\n"))) as server:
        async with UpstreamHTTP() as http:
            reply = await upstream_post(http, server.url())
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.body == b'{"id": 1}'
    assert server.requests[0].header("authorization") == f"Bearer {SECRET}"


async def test_upstream_http_connect_failure_without_the_secret(closed_port_url: str) -> None:
    port = closed_port_url.split(":")[2].split("/")[0]
    async with UpstreamHTTP() as http:
        with pytest.raises(ProviderError) as failure:
            await upstream_post(http, f"{closed_port_url}/{SECRET}?key={SECRET}")
    assert failure.value.kind is ErrorKind.CONNECT
    assert f"127.0.0.1:{port}" in failure.value.message
    assert_no_secret(failure.value.message)


@pytest.mark.parametrize(("url", "why"), [
    (f"ftp://127.0.0.1/v1/{SECRET}", "the URL is not http(s) or has no host"),
    (f"http:///v1?key={SECRET}", "the URL is not http(s) or has no host"),
    (f"http://127.0.0.1:{SECRET[:10]}/v1", "the URL's port is not a number"),
], ids=["scheme", "no-host", "port"])
async def test_upstream_http_says_why_it_cannot_send_a_url_without_repeating_it(url, why) -> None:
    """The URL may hold a key (Gemini's ``?key=``, a key pasted in the wrong place): not repeated."""
    async with UpstreamHTTP() as http:
        with pytest.raises(ProviderError) as failure:
            await upstream_post(http, url)
    assert failure.value.kind is ErrorKind.CONNECTION
    assert failure.value.message == f"cannot send the request: {why}"


async def test_upstream_http_a_header_with_a_line_break_is_a_connection_error() -> None:
    async with Server(serving()) as server, UpstreamHTTP() as http:
        with pytest.raises(ProviderError) as failure:
            await upstream_post(http, server.url(), {"authorization": f"Bearer {SECRET}\r\nx-injected: 1"})
        await asyncio.sleep(0.05)
    assert failure.value.kind is ErrorKind.CONNECTION
    assert "line break" in failure.value.message
    assert_no_secret(failure.value.message)
    assert server.connections == 0


@pytest.mark.parametrize(("handler", "kind"), [
    pytest.param(never_answer, ErrorKind.TIMEOUT, id="timeout"),
    pytest.param(cut_mid_body, ErrorKind.CONNECTION, id="cut-mid-body"),
    pytest.param(serving(b"garbage\r\n\r\n"), ErrorKind.CONNECTION, id="not-http"),
])
async def test_upstream_http_transport_failures_become_provider_errors(handler: Handler, kind: ErrorKind) -> None:
    async with Server(handler) as server, UpstreamHTTP() as http:
        with pytest.raises(ProviderError) as failure:
            await upstream_post(http, server.url(f"/v1/{SECRET}"), timeout_s=0.3)
    assert failure.value.kind is kind
    assert_no_secret(failure.value.message)


@pytest.mark.parametrize("transport", ["http1", "aiohttp"])
async def test_upstream_http_a_request_dropped_on_a_kept_connection_is_sent_once(transport: str) -> None:
    """Either transport: the upstream reads the request on a kept connection and closes it without a
    word; the request reached it once, and the caller gets a connection error (an attempt to count).
    aiohttp sends a request again on a new connection only for idempotent methods, never a POST."""

    async def handle(peer: Peer) -> None:
        if peer.number == 0:
            await peer.request()
            await peer.send(answer(b"first"))
            await peer.request()  # and close, unanswered
        else:
            await serving(answer(b"second"))(peer)

    async with Server(handle) as server, UpstreamHTTP(transport) as http:
        assert (await upstream_post(http, server.url())).body == b"first"
        with pytest.raises(ProviderError) as failure:
            await upstream_post(http, server.url())
        await asyncio.sleep(0.1)  # time for a second connection, were one made
    assert failure.value.kind is ErrorKind.CONNECTION
    assert len(server.requests) == 2
    assert server.connections == 1
    if transport == "http1":
        assert failure.value.message == ("the upstream closed the connection after the request was sent, "
                                         "before any answer; not sent again, since it may have been read")


def sse(*events: bytes) -> bytes:
    """A chunked event stream, one chunk per event."""
    return CHUNKED_HEAD + b"".join(chunk(b"data: %s\n\n" % event) for event in events) + chunk(b"")


async def stream_lines(http: UpstreamHTTP, url: str) -> list[bytes]:
    stream = await http.stream(url, b'{"stream": true}', {"authorization": f"Bearer {SECRET}"},
                               timeout_s=TIMEOUT, connect_timeout_s=TIMEOUT, secret=SECRET)
    async with stream:
        assert stream.status == 200 and not stream.is_json
        return [line async for line in stream.lines()]


async def test_upstream_http_stream_lines() -> None:
    async with Server(serving(sse(b"1", b"2", b"[DONE]"))) as server, UpstreamHTTP() as http:
        lines = await stream_lines(http, server.url())
    assert lines == [b"data: 1", b"", b"data: 2", b"", b"data: [DONE]", b""]


@pytest.mark.parametrize(("read", "expected"), [
    (lambda stream: stream.lines(), [b"data: 1", b"", b"data: 2", b""]),
    (upstream.sse_data, ["1", "2"]),  # the third event never ended
], ids=["lines", "events"])
async def test_upstream_http_stream_gives_what_came_before_a_break(read, expected) -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + chunk(b"data: 1\n\ndata: 2\n\ndata: 3"))  # then the close

    async with Server(handle) as server, UpstreamHTTP() as http:
        stream = await http.stream(server.url(), b"{}", {}, timeout_s=TIMEOUT, connect_timeout_s=TIMEOUT,
                                   secret=SECRET)
        found = []
        with pytest.raises(ProviderError) as failure:
            async for item in read(stream):
                found.append(item)
    assert found == expected
    assert failure.value.kind is ErrorKind.CONNECTION



#: An event stream in awkward pieces: CRLF endings, a comment, a named event with two data
#: lines, an event split across reads, and a last event with no blank line after it.
AWKWARD_PIECES = (b"data: one\r\n\r\n", b": a comment\n", b"event: x\ndata: multi\ndata: line\n\n",
                  b"data: spl", b"it\n", b"\n", b"data: last")


def awkward_stream() -> Handler:
    async def handle(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(CHUNKED_HEAD)
            for piece in AWKWARD_PIECES:
                await peer.send(chunk(piece))
                await asyncio.sleep(0.01)  # each piece its own read
            await peer.send(chunk(b""))

    return handle


async def test_upstream_http_stream_events_are_the_data_of_its_lines() -> None:
    """``events()`` (what sse_data uses) and sse_data over ``lines()`` (what it does for any
    other stream) give the same payloads."""
    async with Server(awkward_stream()) as server, UpstreamHTTP() as http:
        found = []
        for read in (lambda stream: stream.events(), lambda stream: upstream._data_of_lines(stream)):
            stream = await http.stream(server.url(), b"{}", {}, timeout_s=TIMEOUT, connect_timeout_s=TIMEOUT,
                                       secret=SECRET)
            async with stream:
                found.append([data async for data in read(stream)])
    assert found == [["one", "multi\nline", "split", "last"]] * 2


# --- through a forward proxy (HTTP_PROXY) --------------------------------------------


def proxy_answer(request: Request) -> bytes:
    """The proxy answers itself; its answer says which request line it saw."""
    if request.line.startswith("POST ") and "/stream" in request.line:
        return sse(b"via-proxy", b"[DONE]")
    return answer(json.dumps({"proxy saw": request.line}).encode(), headers="content-type: application/json\r\n")


async def test_a_call_through_http_proxy(monkeypatch: pytest.MonkeyPatch, closed_port_url: str) -> None:
    """The target's port is closed: only through the proxy can an answer come."""
    async with Server(serving(proxy_answer)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        async with UpstreamHTTP() as http:
            reply = await upstream_post(http, closed_port_url)
    line = f"POST {closed_port_url} HTTP/1.1"
    assert reply.status == 200 and reply.headers["Content-Type"] == "application/json"
    assert json.loads(reply.body) == {"proxy saw": line}
    [request] = proxy.requests
    assert request.line == line
    assert request.body == b'{"model": "m"}'
    assert request.header("authorization") == f"Bearer {SECRET}"


async def test_a_stream_through_http_proxy(monkeypatch: pytest.MonkeyPatch, closed_port_url: str) -> None:
    async with Server(serving(proxy_answer)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        async with UpstreamHTTP() as http:
            lines = await stream_lines(http, closed_port_url.replace("/v1/chat/completions", "/stream"))
    assert lines == [b"data: via-proxy", b"", b"data: [DONE]", b""]
    assert [request.line.split()[1] for request in proxy.requests] == [
        closed_port_url.replace("/v1/chat/completions", "/stream")]


async def test_no_proxy_sends_the_call_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Server(serving(proxy_answer)) as proxy, Server(serving(answer(b"direct"))) as origin:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with UpstreamHTTP() as http:
            reply = await upstream_post(http, origin.url())
    assert reply.body == b"direct"
    assert not proxy.requests
    assert [request.line for request in origin.requests] == ["POST /v1/chat/completions HTTP/1.1"]


@pytest.mark.parametrize("password", ["Zq7pW9-proxy-pass", "Zq7/x#pW9-proxy"], ids=["plain", "unencoded"])
async def test_a_proxy_that_refuses_never_shows_its_password(monkeypatch: pytest.MonkeyPatch, password: str) -> None:
    """aiohttp names the proxy's URL, credentials and all, in some of its errors (a refused
    CONNECT, a URL it cannot parse); the message keeps neither the user's password nor a piece."""
    refuse = answer(b"", status="403 Nope")
    async with Server(serving(refuse)) as proxy:
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.setenv("HTTPS_PROXY", f"http://corp:{password}@127.0.0.1:{proxy.port}")
        async with UpstreamHTTP() as http:
            with pytest.raises(ProviderError) as failure:
                await upstream_post(http, "https://upstream.example/v1/chat/completions")
    message = failure.value.message
    assert failure.value.kind in (ErrorKind.CONNECT, ErrorKind.CONNECTION)
    assert password not in message and password[:8] not in message and password[-8:] not in message, message
    assert_no_secret(message)


async def test_an_unreachable_proxy_is_a_connect_error(monkeypatch: pytest.MonkeyPatch,
                                                        closed_port_url: str) -> None:
    proxy_url = closed_port_url.split("/v1")[0]
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    async with Server(serving()) as origin, UpstreamHTTP() as http:
        with pytest.raises(ProviderError) as failure:
            await upstream_post(http, origin.url(f"/v1/{SECRET}"))
    assert failure.value.kind is ErrorKind.CONNECT
    assert_no_secret(failure.value.message)
    assert not origin.requests
