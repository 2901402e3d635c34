"""A fake EchoWire server for tests: a real HTTP server on 127.0.0.1, standard library only.

    with FakeEchoWire(key=TEST_KEY) as fake:
        fake.url                          # http://127.0.0.1:<port>/v1/echo
        fake.fail("echo-1", 503)          # answer 503 for model echo-1, in EchoWire's error shape
        fake.garble("echo-1")             # answer 200 with a body that is not an EchoWire reply
        fake.cut("echo-1", after=1)       # a stream: one delta, then the connection closes
        fake.break_stream("echo-1", after=1)  # a stream: one delta, then an error event
        fake.calls["echo-1"]              # requests per model; fake.requests: (headers, body)
        fake.reset()

The reply's ``output`` is ``"echo: <input>"``, cut to ``max_out`` words, and ``used``
counts words (EchoWire's "tokens"). With ``"stream": true`` it comes as server-sent
events, one ``{"delta": ...}`` per word, then ``{"used": ...}`` and ``[END]``. A wrong or missing ``x-echowire-key`` gets 401,
and the message quotes the key it got, as careless real APIs do: the adapter must
mask it. A body that breaks the format gets 400.
"""

from __future__ import annotations

import collections
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = "/v1/echo"
#: A key for tests to configure the fake with (``FakeEchoWire(key=TEST_KEY)``).
TEST_KEY = "ew-test-key-0123456789abcdef"


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class FakeEchoWire:
    """An EchoWire server in a background thread; ``url`` is its endpoint."""

    def __init__(self, key: str | None = None) -> None:
        self.key = key
        self.calls: collections.Counter[str] = collections.Counter()
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self._failing: dict[str, tuple[int, str]] = {}
        self._garbled: set[str] = set()
        self._cut: dict[str, tuple[int, bool]] = {}  # model -> (deltas sent, then an error event?)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}{PATH}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-echowire",
                                        daemon=True)

    def __enter__(self) -> FakeEchoWire:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def fail(self, model: str, status: int, message: str = "the model is overloaded") -> None:
        self._failing[model] = (status, message)

    def garble(self, model: str) -> None:
        self._garbled.add(model)

    def cut(self, model: str, after: int) -> None:
        self._cut[model] = (after, False)

    def break_stream(self, model: str, after: int) -> None:
        self._cut[model] = (after, True)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.requests.clear()
        self._failing.clear()
        self._garbled.clear()
        self._cut.clear()

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        """(status, body) for one request; the body is a dict (sent as JSON) or raw bytes."""
        if path != PATH:
            return 404, error("not_found", f"no such endpoint {path}")
        key = headers.get("x-echowire-key")
        if self.key is not None and key != self.key:
            return 401, error("bad_key", f"unknown key {key!r}")
        body = _valid_body(raw)
        if isinstance(body, str):
            return 400, error("bad_request", body)
        model = body["model"]
        with self._lock:
            self.calls[model] += 1
            self.requests.append((headers, body))
        if model in self._failing:
            status, message = self._failing[model]
            return status, error("upstream_error", message)
        if model in self._garbled:
            return 200, b'{"outputs": ["this", "is", "not", "EchoWire"]}'
        words = f"echo: {body['input']}".split()
        if body.get("max_out") is not None:
            words = words[: body["max_out"]]
        used = {"in": len(body["input"].split()), "out": len(words)}
        if body.get("stream"):
            return 200, self._events(model, words, used)
        return 200, {"output": " ".join(words), "used": used}

    def _events(self, model: str, words: list[str], used: dict[str, int]) -> Stream:
        """The SSE events of a streamed answer, as this model is set to send them."""
        deltas = [{"delta": word if i == 0 else " " + word} for i, word in enumerate(words)]
        if model not in self._cut:
            return Stream([*deltas, {"used": used}, "[END]"])
        after, error_event = self._cut[model]
        tail = [error("upstream_error", "the model stopped half-way")] if error_event else []
        return Stream([*deltas[:after], *tail], close=not error_event)


class Stream(list):
    """Server-sent events to send (dicts as JSON, strings as they are); ``close``: end the
    connection after them, without the end of the chunked body (a cut stream)."""

    def __init__(self, events: list, close: bool = False) -> None:
        super().__init__(events)
        self.close = close


def _valid_body(raw: bytes) -> dict[str, Any] | str:
    """The request body, or what is wrong with it."""
    try:
        body = json.loads(raw)
    except ValueError:
        return "the body is not JSON"
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if not isinstance(body.get("input"), str):
        return "input: must be a string"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: must be a non-empty string"
    max_out = body.get("max_out")
    if max_out is not None and (not isinstance(max_out, int) or isinstance(max_out, bool) or max_out < 1):
        return "max_out: must be a whole number above 0"
    return body


def _handler(fake: FakeEchoWire) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the gateway's pooled client expects

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, body = fake.answer(self.path, headers, raw)
            if isinstance(body, Stream):
                self._stream(body)
                return
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, events: Stream) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for event in events:
                payload = (event if isinstance(event, str) else json.dumps(event)).encode()
                frame = b"data: " + payload + b"\n\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                self.wfile.flush()
            if events.close:
                self.close_connection = True
                return
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # quiet

    return Handler
