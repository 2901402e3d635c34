"""Fake OpenAI-compatible chat-completions upstream for tests, demos and fault injection.

``FakeUpstream`` is a real HTTP/1.1 server on plain asyncio streams (no framework), so
it can misbehave at the socket level: slow first byte, error statuses, malformed JSON,
dropped connections, resets mid-body, cut/stalled/erroring SSE streams.

Behaviour is chosen per model: ``set_behavior(model, ...)`` (model ``"*"`` is the
default), ``POST /_fake/behavior`` from another process, or by model-name convention
(``fail-500``/``fail-503``/``fail-429``, ``slow``, ``malformed``, ``drop``).

Run standalone: ``python -m core.fake_upstream --host 127.0.0.1 --port 8001``.
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
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable

import orjson

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
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
_STALL_MAX_S = 300.0
_MAX_RECORDED = 1000
_IO_ERRORS = (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


@dataclass
class Behavior:
    """How the fake answers a chat-completions request (see module docstring for kinds)."""

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


def _error_body(message: str, status: int, code: str | None = None) -> bytes:
    err_type = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    if code == "insufficient_quota":
        err_type = "insufficient_quota"
    return orjson.dumps({"error": {"message": message, "type": err_type, "param": None, "code": code}})


def _sse(obj: Any) -> bytes:
    """One SSE event framed as one HTTP chunk."""
    data = b"data: " + (obj if isinstance(obj, bytes) else orjson.dumps(obj)) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


# ---------------------------------------------------------------- OpenAI payloads

def _text_of(content: Any) -> str:
    """Text of a message content: a string or a list of {"type": "text"} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content
                        if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _prompt_tokens(messages: list) -> int:
    return sum(max(1, len(_text_of(m.get("content")).split())) for m in messages if isinstance(m, dict))


def _default_reply(model: str, messages: list) -> str:
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    last = _text_of(users[-1].get("content"))[:200] if users else ""
    return f"Fake reply from {model}: {last}"


def _tool_call(payload: dict) -> dict | None:
    """The fake tool call for a request with ``tools`` (first tool's function), else None."""
    tools = payload.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    name = (tools[0].get("function") or {}).get("name", "tool")
    return {"id": "call_fake_1", "type": "function", "function": {"name": name, "arguments": "{}"}}


def _split(text: str, n: int) -> list[str]:
    """Split text into exactly max(1, n) consecutive pieces."""
    n = max(1, n)
    return [text[i * len(text) // n:(i + 1) * len(text) // n] for i in range(n)]


@dataclass
class _Answer:
    """What the assistant 'says' for one request, in full and as stream deltas."""

    message: dict
    finish_reason: str
    deltas: list[dict]
    usage: dict

    @classmethod
    def build(cls, payload: dict, behavior: Behavior) -> _Answer:
        messages = payload.get("messages") if isinstance(payload.get("messages"), list) else []
        prompt = _prompt_tokens(messages)
        call = _tool_call(payload) if behavior.reply is None else None
        if call is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            deltas, finish, completion = [{"tool_calls": [{"index": 0, **call}]}], "tool_calls", 1
        else:
            reply = behavior.reply if behavior.reply is not None else _default_reply(
                str(payload.get("model")), messages)
            message = {"role": "assistant", "content": reply}
            deltas = [{"content": p} for p in _split(reply, behavior.chunks)]
            finish, completion = "stop", len(reply.split())
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}
        return cls(message, finish, deltas, usage)


# ---------------------------------------------------------------- server

class FakeUpstream:
    """Scriptable fake OpenAI upstream; use ``with FakeUpstream() as up:`` or ``await serve()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
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

    @property
    def chat_url(self) -> str:
        return self.url + "/v1/chat/completions"

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
            await conn.respond(400, _error_body("malformed HTTP request", 400))
            return None

    def _record(self, req: _Request, payload: Any) -> None:
        model = payload.get("model") if isinstance(payload, dict) else None
        self.requests.append(
            {"path": req.path, "headers": dict(req.headers), "json": payload, "model": model})
        if len(self.requests) > _MAX_RECORDED:
            del self.requests[: len(self.requests) - _MAX_RECORDED]

    async def _dispatch(self, req: _Request, conn: _Conn) -> bool:
        """Route one request; returns False when the connection must be closed."""
        path = req.path.split("?", 1)[0].rstrip("/")
        if path.startswith("/_fake/"):
            return await self._control(req, path, conn)
        try:
            payload = orjson.loads(req.body) if req.body else None
        except orjson.JSONDecodeError:
            payload = None
        self._record(req, payload)
        if req.method == "POST" and path.endswith("/chat/completions"):
            return await self._chat(payload, conn)
        if req.method == "GET" and path.endswith("/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.calls]
            await conn.respond(200, orjson.dumps({"object": "list", "data": data}))
            return True
        await conn.respond(404, _error_body(f"unknown path {req.method} {req.path}", 404))
        return True

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

    async def _chat(self, payload: Any, conn: _Conn) -> bool:
        """Answer a chat-completions request according to the model's behaviour."""
        if not isinstance(payload, dict) or not payload.get("model"):
            msg = "request body must be a JSON object with a model" if isinstance(payload, dict) \
                else "could not parse the JSON body of your request"
            await conn.respond(400, _error_body(msg, 400, "invalid_request"))
            return True
        model = str(payload["model"])
        self.calls[model] += 1
        b = self._resolve(model)
        if b.delay_s > 0:
            await asyncio.sleep(b.delay_s)
        return await getattr(self, f"_kind_{b.kind}")(payload, b, conn)

    # ---- behaviour kinds: each returns whether to keep the connection alive

    def _completion(self, payload: dict, answer: _Answer, choices: bool = True) -> bytes:
        choice = {"index": 0, "message": answer.message, "logprobs": None,
                  "finish_reason": answer.finish_reason}
        return orjson.dumps({
            "id": f"chatcmpl-fake-{next(self._ids)}", "object": "chat.completion",
            "created": int(time.time()), "model": payload["model"],
            "choices": [choice] if choices else [], "usage": answer.usage})

    async def _kind_ok(self, payload: dict, b: Behavior, conn: _Conn) -> bool:
        answer = _Answer.build(payload, b)
        if payload.get("stream"):
            return await self._stream(payload, b, answer, conn, len(answer.deltas), finish=True)
        await conn.respond(200, self._completion(payload, answer), b.headers)
        return True

    _kind_slow_first_byte = _kind_ok

    async def _kind_status(self, payload: dict, b: Behavior, conn: _Conn) -> bool:
        body = _error_body(f"fake upstream error {b.status}", b.status, b.error_code)
        await conn.respond(b.status, body, b.headers)
        return True

    async def _kind_malformed(self, payload: dict, b: Behavior, conn: _Conn) -> bool:
        await conn.respond(200, b'{"choices": [tru', b.headers)
        return True

    async def _kind_empty_choices(self, payload: dict, b: Behavior, conn: _Conn) -> bool:
        body = self._completion(payload, _Answer.build(payload, b), choices=False)
        await conn.respond(200, body, b.headers)
        return True

    async def _kind_drop(self, payload: dict, b: Behavior, conn: _Conn) -> bool:
        return False

    async def _kind_reset_mid_body(self, payload: dict, b: Behavior, conn: _Conn) -> bool:
        body = self._completion(payload, _Answer.build(payload, b))
        headers = conn.base_headers("application/json", {"content-length": str(len(body)), **b.headers})
        await conn.write(_head(200, headers) + body[: len(body) // 2])
        await asyncio.sleep(0.05)  # let the client read the head before the RST
        sock = conn.writer.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.writer.transport.abort()
        return False

    async def _kind_stream_cut(self, payload: dict, b: Behavior, conn: _Conn) -> bool:
        return await self._stream(payload, b, _Answer.build(payload, b), conn, b.cut_after)

    async def _kind_stream_stall(self, payload: dict, b: Behavior, conn: _Conn) -> bool:
        await self._stream(payload, b, _Answer.build(payload, b), conn, b.cut_after)
        with contextlib.suppress(asyncio.TimeoutError):  # silent until EOF, stop() or the cap
            await asyncio.wait_for(_until_eof(conn.reader), _STALL_MAX_S)
        return False

    async def _kind_stream_error_event(self, payload: dict, b: Behavior, conn: _Conn) -> bool:
        await self._stream(payload, b, _Answer.build(payload, b), conn, b.cut_after)
        error = {"error": {"message": "fake mid-stream error", "type": "server_error"}}
        await conn.write(_sse(error) + b"0\r\n\r\n")
        return True

    async def _stream(self, payload: dict, b: Behavior, answer: _Answer,
                      conn: _Conn, n_deltas: int, finish: bool = False) -> bool:
        """Send SSE head, role chunk and ``n_deltas`` deltas; with ``finish`` also the end."""
        headers = conn.base_headers("text/event-stream", {
            "cache-control": "no-cache", "transfer-encoding": "chunked", **b.headers})
        base = {"id": f"chatcmpl-fake-{next(self._ids)}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": payload["model"]}

        def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
            return _sse({**base, "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]})

        await conn.write(_head(200, headers) + chunk({"role": "assistant", "content": ""}))
        for i, delta in enumerate(answer.deltas[:max(0, n_deltas)]):
            if i and b.chunk_delay_s > 0:
                await asyncio.sleep(b.chunk_delay_s)
            await conn.write(chunk(delta))
        if not finish:
            return False
        tail = chunk({}, answer.finish_reason)
        options = payload.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            tail += _sse({**base, "choices": [], "usage": answer.usage})
        await conn.write(tail + _sse(b"[DONE]") + b"0\r\n\r\n")
        return True


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Discard input until the peer closes the connection."""
    while await reader.read(65536):
        pass


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: run the fake upstream in the foreground."""
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    upstream = FakeUpstream(args.host, args.port)

    def announce() -> None:
        print(f"fake upstream listening on {upstream.url}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(upstream.serve(on_listening=announce))


if __name__ == "__main__":
    main()
