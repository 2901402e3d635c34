"""Fake LLM upstream for tests, demos and fault injection, in every wire format an adapter brings.

``FakeUpstream`` is a real HTTP/1.1 server on plain asyncio streams (no framework), so
it can misbehave at the socket level: slow first byte, error statuses, malformed JSON,
dropped connections, resets mid-body, cut/stalled/erroring SSE streams.

It knows no wire format itself: the adapter plugins give theirs (``register_fake_formats``;
``formats.py`` holds the contract), and it answers each on one port. With the built-in
adapters: OpenAI chat completions at ``endpoint("openai")`` (``chat_url``), Anthropic's
Messages API at ``endpoint("anthropic")`` (needs ``x-api-key``), Gemini's
``generateContent`` under ``endpoint("gemini")`` (key in ``x-goog-api-key`` or ``?key=``).
The behaviour kinds here work the same in every format.
Behaviour is chosen per model (for Gemini, the model in the URL): ``set_behavior(model, ...)``
(model ``"*"`` is the default), ``POST /_fake/behavior`` from another process, or by
model-name convention (``fail-500``/``fail-503``/``fail-429``, ``slow``, ``malformed``, ``drop``).

Run standalone: ``python -m modelbroker.fake_upstream --host 127.0.0.1 --port 8001``.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import itertools
import socket
import struct
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import parse_qs

import orjson

from modelbroker.fake_upstream.formats import Call, FakeFormat, FakeRequest, Rejected, Reply, Script

KINDS = (
    "ok", "status", "malformed", "empty_choices", "drop", "reset_mid_body",
    "stream_cut", "stream_stall", "stream_error_event", "slow_first_byte",
)
_NAMED_MODELS = {
    "fail-500": {"kind": "status", "status": 500},
    "fail-503": {"kind": "status", "status": 503},
    "fail-429": {"kind": "status", "status": 429},
    "slow": {"kind": "ok", "delay_s": 30.0},
    "malformed": {"kind": "malformed"},
    "drop": {"kind": "drop"},
}
_STALL_MAX_S = 300.0
_MAX_RECORDED = 1000
_IO_ERRORS = (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)
#: The provider type a providers.yaml entry has unless it says otherwise.
DEFAULT_TYPE = "openai"


def installed_formats(pm: Any = None) -> dict[str, FakeFormat]:
    """Provider type -> the fake format its adapter plugin registers (``register_fake_formats``),
    from every installed plugin that loads (or the plugins of ``pm``)."""
    from modelbroker._plugins.hookcall import HookCalls
    from modelbroker._plugins.manager import make_plugin_manager

    found: dict[str, FakeFormat] = {}
    arguments = {"register": found.__setitem__}
    for _, function, argnames in HookCalls(pm or make_plugin_manager(strict=False)).implementations(
            "register_fake_formats"):
        function(*map(arguments.__getitem__, argnames))
    return found


def _error_body(message: str) -> bytes:
    """The fake's own errors (a request it cannot read, a path no format has)."""
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error"}})


@dataclass
class Behavior:
    """How the fake answers a model request, in any wire format.

    ``kind`` is one of ``KINDS``. ``error_code`` is, for ``status``, OpenAI's ``code``,
    Anthropic's error ``type`` or Gemini's ``status`` name (default: from ``status``).
    ``chunks`` splits the reply into stream deltas, ``cut_after`` counts the deltas
    sent before a cut, stall or error event; ``times`` reverts to the default after
    that many requests. ``body``, for ``status``, is the error body to send instead of the
    format's own (a dict is sent as JSON): an upstream's exact words, type and param.
    """

    kind: str = "ok"
    status: int = 500
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    error_code: str | None = None
    chunks: int = 3
    chunk_delay_s: float = 0.0
    cut_after: int = 2
    reply: str | None = None
    times: int | None = None
    body: Any = None

    @classmethod
    def coerce(cls, value: Behavior | dict | str) -> Behavior:
        """Build a validated Behavior from a Behavior, a dict of fields or a kind name."""
        if isinstance(value, Behavior):
            behavior = dataclasses.replace(value, headers=dict(value.headers))
        elif isinstance(value, str):
            behavior = cls(kind=value)
        elif isinstance(value, dict):
            try:
                behavior = cls(**value)
            except TypeError as exc:
                raise ValueError(f"invalid behavior fields: {exc}") from None
        else:
            raise ValueError(f"behavior must be Behavior, dict or str, not {type(value).__name__}")
        if behavior.kind not in KINDS:
            raise ValueError(f"unknown behavior kind {behavior.kind!r}; kinds: {', '.join(KINDS)}")
        if behavior.times is not None and behavior.times < 1:
            raise ValueError("times must be None or >= 1")
        return behavior


@dataclass
class _Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        return "close" not in conn and (self.version != "HTTP/1.0" or "keep-alive" in conn)


# ---------------------------------------------------------------- HTTP plumbing

async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """Read one HTTP/1.1 request; None on clean EOF, ValueError on garbage."""
    line = await reader.readline()
    while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between requests
        line = await reader.readline()
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        raise ValueError("bad request line")
    headers: dict[str, str] = {}
    while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length") or 0))
    return _Request(parts[0].upper(), parts[1], parts[2].upper(), headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """Read a chunked request body (trailers are discarded)."""
    body = bytearray()
    while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
        body += await reader.readexactly(size)
        await reader.readline()
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass
    return bytes(body)


def _head(status: int, headers: dict[str, str]) -> bytes:
    """Serialize a status line plus headers (ending with the blank line)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _merge(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    return {**base, **{k.lower(): str(v) for k, v in extra.items()}}


@dataclass
class _Conn:
    """One client connection plus the keep-alive wish of its current request."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    keep_alive: bool = True

    def base_headers(self, content_type: str, extra: dict[str, str]) -> dict[str, str]:
        return _merge({"content-type": content_type,
                       "connection": "keep-alive" if self.keep_alive else "close"}, extra)

    async def write(self, data: bytes) -> None:
        """Write and flush; raise ConnectionResetError if the peer is already gone."""
        if self.writer.transport.is_closing():
            raise ConnectionResetError("client went away")
        self.writer.write(data)
        await self.writer.drain()

    async def respond(self, status: int, body: bytes, extra: dict[str, str] | None = None,
                      content_type: str = "application/json") -> None:
        """Send a complete Content-Length framed response."""
        headers = self.base_headers(content_type, {"content-length": str(len(body)), **(extra or {})})
        await self.write(_head(status, headers) + body)


def _chunk(event: bytes) -> bytes:
    """One SSE event framed as one HTTP chunk."""
    return b"%x\r\n%s\r\n" % (len(event), event)


# ---------------------------------------------------------------- server

class FakeUpstream:
    """Scriptable fake upstream; ``with FakeUpstream() as up:`` or ``await serve()``.

    ``formats`` (provider type -> ``FakeFormat``) defaults to every installed adapter's.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 formats: dict[str, FakeFormat] | None = None) -> None:
        self.host, self.port = host, port
        self.formats = installed_formats() if formats is None else dict(formats)
        self.calls: collections.Counter[str] = collections.Counter()
        self.requests: list[dict] = []
        self._behaviors: dict[str, list] = {}  # model -> [Behavior, remaining times | None]
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self._conns: dict[asyncio.Task, asyncio.StreamWriter] = {}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def endpoint(self, provider_type: str = DEFAULT_TYPE) -> str:
        """The ``endpoint`` a provider of ``provider_type`` has on this fake."""
        try:
            return self.formats[provider_type].endpoint(self.url)
        except KeyError:
            raise KeyError(f"the fake upstream speaks no format for type {provider_type!r}; it speaks: "
                           f"{', '.join(sorted(self.formats)) or 'none'} (an adapter brings its format "
                           "with register_fake_formats)") from None

    @property
    def chat_url(self) -> str:
        """The endpoint of a provider of the default type, ``openai``."""
        return self.endpoint(DEFAULT_TYPE)

    # ---- behaviour configuration (thread-safe)

    def set_behavior(self, model: str, behavior: Behavior | dict | str) -> None:
        """Set the behaviour for ``model`` (``"*"`` = default for all models)."""
        b = Behavior.coerce(behavior)
        with self._lock:
            self._behaviors[model] = [b, b.times]

    def reset(self) -> None:
        """Forget all behaviours, counters and recorded requests."""
        with self._lock:
            self._behaviors.clear()
        self.calls.clear()
        self.requests.clear()

    def _resolve(self, model: str) -> Behavior:
        """Explicit model behaviour, then ``"*"``, then model-name convention, then ok."""
        with self._lock:
            for key in (model, "*"):
                entry = self._behaviors.get(key)
                if entry is None:
                    continue
                if entry[1] is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        del self._behaviors[key]
                return entry[0]
        return Behavior(**_NAMED_MODELS[model]) if model in _NAMED_MODELS else Behavior()

    # ---- lifecycle

    def start(self) -> FakeUpstream:
        """Serve from a daemon thread with its own loop; returns once listening."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        self._loop, self._thread = loop, threading.Thread(
            target=loop.run_forever, name="fake-upstream", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(), loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close the server and every open connection; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or loop.is_closed():
            return
        if thread is None:  # serve() mode: let serve() shut down in its own loop
            if self._stop_event is not None:
                loop.call_soon_threadsafe(self._stop_event.set)
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def serve(self, on_listening: Callable[[], None] | None = None) -> None:
        """Run in the caller's loop until cancelled (or ``stop()`` is called)."""
        self._loop = asyncio.get_running_loop()
        await self._open()
        if on_listening is not None:
            on_listening()
        try:
            await self._stop_event.wait()
        finally:
            await self._shutdown()

    async def _open(self) -> None:
        self._stop_event = asyncio.Event()
        self._server = await asyncio.start_server(
            self._handle_conn, self.host, self.port, backlog=1024, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._conns)
        for task, writer in list(self._conns.items()):
            writer.transport.abort()
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    # ---- connection handling

    async def _handle_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one keep-alive connection; never lets I/O errors escape."""
        task, conn = asyncio.current_task(), _Conn(reader, writer)
        self._conns[task] = writer
        try:
            while (req := await self._next_request(conn)) is not None:
                conn.keep_alive = req.keep_alive
                if not await self._dispatch(req, conn) or not req.keep_alive:
                    break
        except (asyncio.CancelledError, *_IO_ERRORS):
            pass  # client vanished or server stopping: not an error for a fake
        finally:
            self._conns.pop(task, None)
            writer.transport.close()

    @staticmethod
    async def _next_request(conn: _Conn) -> _Request | None:
        """Next request on the connection; answers 400 and ends it on unparsable HTTP."""
        try:
            return await _read_request(conn.reader)
        except ValueError:
            conn.keep_alive = False
            await conn.respond(400, _error_body("malformed HTTP request"))
            return None

    def _record(self, req: _Request, payload: Any, model: str | None) -> None:
        self.requests.append(
            {"path": req.path, "headers": dict(req.headers), "json": payload, "model": model})
        if len(self.requests) > _MAX_RECORDED:
            del self.requests[: len(self.requests) - _MAX_RECORDED]

    async def _dispatch(self, req: _Request, conn: _Conn) -> bool:
        """Route one request; returns False when the connection must be closed."""
        path, _, query = req.path.partition("?")
        path = path.rstrip("/")
        if path.startswith("/_fake/"):
            return await self._control(req, path, conn)
        try:
            payload = orjson.loads(req.body) if req.body else None
        except orjson.JSONDecodeError:
            payload = None
        request = FakeRequest(req.method, path, parse_qs(query), req.headers, payload, next(self._ids))
        try:
            call = self._call(request)
        except Rejected as rejected:
            self._record(req, payload, rejected.model or _model_of(payload))
            await conn.respond(rejected.status, rejected.body)
            return True
        self._record(req, payload, call.model if call is not None else _model_of(payload))
        if call is not None:
            return await self._answer(call, conn)
        if req.method == "GET" and path.endswith("/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.calls]
            await conn.respond(200, orjson.dumps({"object": "list", "data": data}))
            return True
        await conn.respond(404, _error_body(f"unknown path {req.method} {req.path}"))
        return True

    def _call(self, request: FakeRequest) -> Call | None:
        """The request in the first format that recognises it, None if none does; raises Rejected."""
        for wire_format in self.formats.values():
            call = wire_format.call(request)
            if call is not None:
                return call
        return None

    async def _control(self, req: _Request, path: str, conn: _Conn) -> bool:
        """``/_fake/behavior``, ``/_fake/reset`` and ``/_fake/stats``."""
        status, body = 200, {"ok": True}
        try:
            if path == "/_fake/behavior" and req.method == "POST":
                data = orjson.loads(req.body)
                self.set_behavior(str(data.get("model", "*")), data.get("behavior", "ok"))
            elif path == "/_fake/reset" and req.method == "POST":
                self.reset()
            elif path == "/_fake/stats" and req.method == "GET":
                body = {"calls": dict(self.calls), "requests": len(self.requests)}
            else:
                status, body = 404, {"ok": False, "error": f"unknown control {req.method} {path}"}
        except (ValueError, AttributeError, TypeError) as exc:
            status, body = 400, {"ok": False, "error": str(exc)}
        await conn.respond(status, orjson.dumps(body))
        return True

    async def _answer(self, call: Call, conn: _Conn) -> bool:
        """Answer a model request according to the model's behaviour."""
        self.calls[call.model] += 1
        b = self._resolve(call.model)
        if b.delay_s > 0:
            await asyncio.sleep(b.delay_s)
        return await getattr(self, f"_kind_{b.kind}")(call, call.reply(b.reply, b.chunks), b, conn)

    # ---- behaviour kinds: each returns whether to keep the connection alive

    async def _kind_ok(self, call: Call, reply: Reply, b: Behavior, conn: _Conn) -> bool:
        if call.stream:
            script = call.script(reply)
            return await self._stream(script, b, conn, len(script.deltas), finish=True)
        await conn.respond(200, call.completion(reply), b.headers)
        return True

    _kind_slow_first_byte = _kind_ok

    async def _kind_status(self, call: Call, reply: Reply, b: Behavior, conn: _Conn) -> bool:
        if b.body is not None:
            body = b.body if isinstance(b.body, bytes) else orjson.dumps(b.body)
        else:
            body = call.error(b.status, b.error_code)
        await conn.respond(b.status, body, b.headers)
        return True

    async def _kind_malformed(self, call: Call, reply: Reply, b: Behavior, conn: _Conn) -> bool:
        await conn.respond(200, call.malformed(), b.headers)
        return True

    async def _kind_empty_choices(self, call: Call, reply: Reply, b: Behavior, conn: _Conn) -> bool:
        await conn.respond(200, call.empty(reply), b.headers)
        return True

    async def _kind_drop(self, call: Call, reply: Reply, b: Behavior, conn: _Conn) -> bool:
        return False

    async def _kind_reset_mid_body(self, call: Call, reply: Reply, b: Behavior, conn: _Conn) -> bool:
        body = call.completion(reply)
        headers = conn.base_headers("application/json", {"content-length": str(len(body)), **b.headers})
        await conn.write(_head(200, headers) + body[: len(body) // 2])
        await asyncio.sleep(0.05)  # let the client read the head before the RST
        sock = conn.writer.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.writer.transport.abort()
        return False

    async def _kind_stream_cut(self, call: Call, reply: Reply, b: Behavior, conn: _Conn) -> bool:
        return await self._stream(call.script(reply), b, conn, b.cut_after)

    async def _kind_stream_stall(self, call: Call, reply: Reply, b: Behavior, conn: _Conn) -> bool:
        await self._stream(call.script(reply), b, conn, b.cut_after)
        with contextlib.suppress(asyncio.TimeoutError):  # silent until EOF, stop() or the cap
            await asyncio.wait_for(_until_eof(conn.reader), _STALL_MAX_S)
        return False

    async def _kind_stream_error_event(self, call: Call, reply: Reply, b: Behavior, conn: _Conn) -> bool:
        await self._stream(call.script(reply), b, conn, b.cut_after)
        await conn.write(_chunk(call.error_event()) + b"0\r\n\r\n")
        return True

    async def _stream(self, script: Script, b: Behavior, conn: _Conn, n_deltas: int,
                      finish: bool = False) -> bool:
        """Send the SSE head, the opening events and ``n_deltas`` deltas; with ``finish`` also the end."""
        headers = conn.base_headers("text/event-stream", {
            "cache-control": "no-cache", "transfer-encoding": "chunked", **b.headers})
        await conn.write(_head(200, headers) + b"".join(map(_chunk, script.opening)))
        for i, event in enumerate(script.deltas[:max(0, n_deltas)]):
            if i and b.chunk_delay_s > 0:
                await asyncio.sleep(b.chunk_delay_s)
            await conn.write(_chunk(event))
        if not finish:
            return False
        await conn.write(b"".join(map(_chunk, script.closing)) + b"0\r\n\r\n")
        return True

async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Discard input until the peer closes the connection."""
    while await reader.read(65536):
        pass


def _model_of(payload: Any) -> str | None:
    return str(payload["model"]) if isinstance(payload, dict) and payload.get("model") else None


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: run the fake upstream in the foreground."""
    parser = argparse.ArgumentParser(
        prog="python -m modelbroker.fake_upstream",
        description="A fake model server on loopback, in every wire format an installed adapter brings. "
                    "Its models answer 'Fake reply from <model>: <your prompt>'; some names fail on purpose "
                    "(fail-500, fail-503, fail-429, slow, malformed, drop). POST /_fake/behavior sets others.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    upstream = FakeUpstream(args.host, args.port)

    def announce() -> None:
        endpoints = "\n".join(f"  {kind:<10} {upstream.endpoint(kind)}" for kind in sorted(upstream.formats))
        print(f"fake upstream listening on {upstream.url}; endpoints by provider type:\n{endpoints}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(upstream.serve(on_listening=announce))

