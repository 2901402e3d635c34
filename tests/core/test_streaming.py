"""Streaming through the gateway: /v1/chat/completions (``stream: true``) and /generate.

Everything is real: the gateway is uvicorn on loopback (tests/conftest.py), the upstream
is the fake upstream (core/fake_upstream/) or, where the fake has no such failure, a
tiny scripted socket server defined here (a malformed chunk mid-stream, a stream with no
usage chunk, a server that notices when the gateway hangs up). Clients are the official
``openai`` SDK (no retries) and raw ``httpx`` streaming.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
import uuid

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from modelbroker._routing.tokens import count_tokens, preload

SECRET = "sk-modelbroker-stream-test-SECRET-9c8d7e6f5a4b"
PRICE = 0.001
TIMEOUT = 10.0
PROMPT = "hello big world"
HELLO = [{"role": "user", "content": PROMPT}]
RELIABILITY = {"retries": 0, "failure_threshold": 1000}


@pytest.fixture(autouse=True, scope="module")
def _exact_token_counts():
    """The gateway loads tiktoken lazily; load it now so counts compared here are exact."""
    preload()


def reply(model: str) -> str:
    return f"Fake reply from {model}: {PROMPT}"


def new_id() -> str:
    return f"s-{uuid.uuid4().hex[:16]}"


def for_request(lines: list[dict], rid: str) -> list[dict]:
    return sorted((line for line in lines if line["request_id"] == rid), key=lambda line: line["attempt"])


def data_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


def content_of(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def content_deltas(chunks) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def assert_proper_prefix(received: str, full: str) -> None:
    """Some, but not all, of the answer arrived."""
    assert received and full.startswith(received) and received != full, (received, full)


def assert_no_secret(text: str) -> None:
    assert SECRET not in text
    assert SECRET[:12] not in text


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def start(gateway):
    """``start(*providers, **top_level) -> RunningGateway``: no same-provider retry, no breaker."""

    def run(*providers: dict, **top):
        return gateway({"reliability": dict(RELIABILITY), **top, "providers": list(providers)})

    return run


@pytest.fixture(scope="module")
def shared(module_gateway, fake_upstream_server):
    """One gateway (no app.log) for the tests that read no log and leave no state: a/a, then b/b."""
    url = fake_upstream_server.chat_url
    return module_gateway({"reliability": dict(RELIABILITY), "providers": [
        {"name": "a", "endpoint": url, "model": "a", "cost_per_1k_tokens": PRICE, "api_key": SECRET},
        {"name": "b", "endpoint": url, "model": "b", "priority": 5, "cost_per_1k_tokens": PRICE},
    ]}, log=False)


@pytest.fixture
def http():
    with httpx.Client(timeout=TIMEOUT) as client:
        yield client


class ScriptedUpstream:
    """A bare HTTP/1.1 server on loopback that answers every request with the same script.

    A step is bytes (sent at once) or a number of seconds to wait, during which the
    server watches the socket: if the peer closes it, the answer stops there and the
    outcome is ``peer_closed``; otherwise ``completed``. The answer is framed by closing
    the connection (``connection: close``), so the script decides where the body ends.
    """

    def __init__(self, *steps: bytes | float) -> None:
        self.steps = steps
        self.requests: list[dict] = []
        self.outcomes: list[str] = []
        self._cond = threading.Condition()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="scripted-upstream", daemon=True)
        self._acceptor.start()

    @property
    def chat_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def close(self) -> None:
        """Stop accepting; shutdown() wakes the thread blocked in accept(), which close() alone does not."""
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._acceptor.join(timeout=5)

    def wait_outcomes(self, count: int = 1, timeout: float = 5.0) -> list[str]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.outcomes) >= count, timeout)
            return list(self.outcomes)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                body = self._read_request(conn)
            except (OSError, ValueError):
                return
            self.requests.append(json.loads(body) if body else None)
            outcome = "completed"
            for step in self.steps:
                if isinstance(step, (int, float)):
                    if self._peer_closed_within(conn, float(step)):
                        outcome = "peer_closed"
                        break
                else:
                    try:
                        conn.sendall(step)
                    except OSError:
                        outcome = "peer_closed"
                        break
            with self._cond:
                self.outcomes.append(outcome)
                self._cond.notify_all()

    @staticmethod
    def _peer_closed_within(conn: socket.socket, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([conn], [], [], left)
            if readable:
                try:
                    if not conn.recv(4096):
                        return True
                except OSError:
                    return True
        return False

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            part = conn.recv(65536)
            if not part:
                raise ValueError("the client closed before a whole request")
            data += part
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            part = conn.recv(65536)
            if not part:
                raise ValueError("the client closed mid-body")
            body += part
        return body[:length]


SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\nconnection: close\r\n\r\n")


def sse(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
    return sse({"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1, "model": "scripted",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})


ROLE = chunk({"role": "assistant", "content": ""})
DONE = b"data: [DONE]\n\n"


@pytest.fixture
def scripted():
    """``scripted(*steps) -> ScriptedUpstream``, closed at teardown."""
    servers: list[ScriptedUpstream] = []

    def make(*steps: bytes | float) -> ScriptedUpstream:
        server = ScriptedUpstream(*steps)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


# --- the SDK: complete streams, usage ------------------------------------------------------------


def test_stream_with_include_usage_ends_with_the_usage_chunk(start, provider, upstream, sdk):
    gw = start(provider("a", api_key=SECRET))
    rid = new_id()
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, stream=True, stream_options={"include_usage": True},
        extra_headers={"x-request-id": rid})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-modelbroker-provider"] == "a/a"
    assert raw.headers["x-modelbroker-attempts"] == "1"
    assert raw.headers["x-request-id"] == rid
    chunks = list(raw.parse())
    assert content_of(chunks) == reply("a")
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.role == "assistant") == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (3, 7, 10)
    assert [c for c in chunks[:-1] if c.usage is not None] == []
    assert upstream.requests[-1]["json"]["stream_options"] == {"include_usage": True}
    [line] = for_request(gw.log_lines(), rid)
    assert line["success"] is True and line["provider_id"] == "a/a" and line["model_used"] == "a"
    assert (line["prompt_tokens"], line["completion_tokens"], line["total_tokens"]) == (3, 7, 10)
    assert "tokens_estimated" not in line
    assert line["cost"] == pytest.approx(10 * PRICE / 1000)


@pytest.mark.parametrize("stream_options", [None, {"include_usage": False}], ids=["absent", "false"])
def test_stream_without_include_usage_hides_usage_but_logs_real_counts(start, provider, upstream, sdk,
                                                                         stream_options):
    gw = start(provider("a"))
    rid = new_id()
    kwargs = {"stream_options": stream_options} if stream_options else {}
    chunks = list(sdk(gw).chat.completions.create(
        model="auto", messages=HELLO, stream=True, extra_headers={"x-request-id": rid}, **kwargs))
    assert content_of(chunks) == reply("a")
    assert [c for c in chunks if c.usage is not None] == []
    assert all(c.choices for c in chunks)
    # the gateway asked the upstream for usage on its own account
    assert upstream.requests[-1]["json"]["stream_options"] == {"include_usage": True}
    [line] = for_request(gw.log_lines(), rid)
    assert (line["prompt_tokens"], line["completion_tokens"], line["total_tokens"]) == (3, 7, 10)
    assert "tokens_estimated" not in line


def test_client_stream_options_are_kept_alongside_include_usage(shared, upstream, sdk):
    gw = shared
    list(sdk(gw).chat.completions.create(
        model="auto", messages=HELLO, stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False}))
    assert upstream.requests[-1]["json"]["stream_options"] == {"include_usage": True, "include_obfuscation": False}
    assert upstream.requests[-1]["json"]["stream"] is True


async def test_async_sdk_stream(shared, provider):
    gw = shared
    async with AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=TIMEOUT) as client:
        stream = await client.chat.completions.create(
            model="a", messages=HELLO, stream=True, stream_options={"include_usage": True})
        chunks = [c async for c in stream]
    assert content_of(chunks) == reply("a")
    assert chunks[-1].usage.total_tokens == 10


def test_stream_passes_fields_through(shared, upstream, sdk):
    gw = shared
    list(sdk(gw).chat.completions.create(
        model="auto", messages=HELLO, stream=True, seed=5, stop=["X"], max_completion_tokens=9,
        response_format={"type": "json_object"}, extra_body={"x_custom": {"k": [1]}}))
    sent = upstream.requests[-1]["json"]
    assert sent["model"] == "a"
    assert (sent["seed"], sent["stop"], sent["max_completion_tokens"]) == (5, ["X"], 9)
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["x_custom"] == {"k": [1]}


def test_stream_tool_call(shared, upstream, sdk):
    gw = shared
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]
    chunks = list(sdk(gw).chat.completions.create(
        model="auto", messages=HELLO, stream=True, tools=tools, tool_choice="auto"))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1
    assert (calls[0].index, calls[0].id, calls[0].function.name, calls[0].function.arguments) == (
        0, "call_fake_1", "lookup", "{}")
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    sent = upstream.requests[-1]["json"]
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"


def test_stream_content_part_messages(shared, upstream, sdk):
    gw = shared
    messages = [{"role": "system", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "again"}]}]
    chunks = list(sdk(gw).chat.completions.create(model="auto", messages=messages, stream=True))
    assert content_of(chunks) == "Fake reply from a: hello again"
    assert upstream.requests[-1]["json"]["messages"] == messages


# --- fallback before the first content -----------------------------------------------------------


@pytest.mark.parametrize(("behavior", "kind"), [
    ({"kind": "status", "status": 500}, "status"),
    ({"kind": "drop"}, "connection"),
    ({"kind": "stream_cut", "cut_after": 0}, "connection"),  # role chunk, then the connection is cut
    ({"kind": "stream_error_event", "cut_after": 0}, "error_event"),  # role chunk, then an error event
    ({"kind": "malformed"}, "malformed"),
    ({"kind": "empty_choices"}, "malformed"),
    ({"kind": "stream_stall", "cut_after": 0}, "timeout"),  # role chunk, then silence past timeout_s
], ids=["500", "drop", "role-then-cut", "role-then-error-event", "malformed", "empty-choices", "role-then-stall"])
def test_failure_before_content_falls_back_cleanly(start, provider, upstream, sdk, behavior, kind):
    gw = start(provider("a", priority=1, timeout_s=0.5), provider("b", priority=2))
    upstream.set_behavior("a", behavior)
    rid = new_id()
    began = time.monotonic()
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, stream=True, stream_options={"include_usage": True},
        extra_headers={"x-request-id": rid})
    assert raw.headers["x-modelbroker-provider"] == "b/b"
    assert raw.headers["x-modelbroker-attempts"] == "2"
    chunks = list(raw.parse())  # no exception: the client sees one clean stream
    assert time.monotonic() - began < 5
    assert content_of(chunks) == reply("b")
    assert {c.model for c in chunks} == {"b"}
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.role) == 1  # a's held role chunk was dropped
    assert chunks[-1].usage.total_tokens == 10
    lines = for_request(gw.log_lines(), rid)
    assert [(l["attempt"], l["provider_id"], l["success"], l.get("error_kind")) for l in lines] == [
        (1, "a/a", False, kind), (2, "b/b", True, None)]


def test_malformed_chunk_before_content_falls_back(start, provider, scripted, sdk):
    bad = scripted(SSE_HEAD, ROLE, b"data: {this is not json\n\n", DONE)
    gw = start(provider("a", priority=1, endpoint=bad.chat_url), provider("b", priority=2))
    rid = new_id()
    chunks = list(sdk(gw).chat.completions.create(model="auto", messages=HELLO, stream=True,
                                                  extra_headers={"x-request-id": rid}))
    assert content_of(chunks) == reply("b")
    lines = for_request(gw.log_lines(), rid)
    assert [(l["provider_id"], l.get("error_kind")) for l in lines] == [("a/a", "malformed"), ("b/b", None)]


def test_all_fail_before_content_is_a_502_not_a_stream(shared, upstream, http):
    gw = shared
    upstream.set_behavior("*", {"kind": "stream_cut", "cut_after": 0})
    r = http.post(gw.url + "/v1/chat/completions", json={"model": "auto", "messages": HELLO, "stream": True})
    assert r.status_code == 502
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "all_providers_failed"


# --- failures after content: an error event, no [DONE], a partial attempt ---------------------------


def run_broken_stream(gw, sdk, rid: str) -> tuple[list, openai.APIError]:
    """Iterate a stream that must break; returns the chunks received and the error raised."""
    received = []
    stream = sdk(gw).chat.completions.create(model="auto", messages=HELLO, stream=True,
                                             extra_headers={"x-request-id": rid})
    with pytest.raises(openai.APIError) as caught:
        for c in stream:
            received.append(c)
    return received, caught.value


def test_cut_after_two_chunks_raises_in_the_sdk(start, provider, upstream, sdk):
    gw = start(provider("a"), provider("b", priority=5))
    upstream.set_behavior("a", {"kind": "stream_cut", "chunks": 4, "cut_after": 2})
    rid = new_id()
    received, error = run_broken_stream(gw, sdk, rid)
    assert not isinstance(error, openai.APIStatusError)  # the HTTP status was 200; it broke mid-body
    assert len(content_deltas(received)) == 2
    assert_proper_prefix(content_of(received), reply("a"))
    assert error.body["code"] == "stream_interrupted" and error.body["type"] == "upstream_error"
    assert "incomplete" in error.message
    [line] = for_request(gw.log_lines(), rid)  # no fallback once content was sent
    assert line["error_kind"] == "partial" and line["success"] is False
    assert line["tokens_estimated"] is True
    assert line["completion_tokens"] == count_tokens(content_of(received))
    assert upstream.calls["b"] == 0


def test_cut_after_two_chunks_raw_has_no_done(shared, upstream, http):
    gw = shared
    upstream.set_behavior("a", {"kind": "stream_cut", "chunks": 4, "cut_after": 2})
    with http.stream("POST", gw.url + "/v1/chat/completions",
                     json={"model": "auto", "messages": HELLO, "stream": True}) as r:
        assert r.status_code == 200
        text = r.read().decode()
    assert "[DONE]" not in text
    events = data_events(text)
    *chunks, last = [json.loads(e) for e in events]
    texts = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert not texts[0] and len(texts) == 3
    assert_proper_prefix("".join(texts[1:]), reply("a"))
    assert set(last) == {"error"}
    assert last["error"]["code"] == "stream_interrupted"


def test_complete_stream_raw_ends_with_exactly_one_done(shared, http):
    gw = shared
    with http.stream("POST", gw.url + "/v1/chat/completions",
                     json={"model": "auto", "messages": HELLO, "stream": True}) as r:
        assert r.headers["cache-control"] == "no-cache"
        text = r.read().decode()
    events = data_events(text)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    assert text.endswith("data: [DONE]\n\n")
    assert all("error" not in json.loads(e) for e in events[:-1])


def test_stall_past_timeout_ends_with_an_error_event(start, provider, upstream, sdk):
    gw = start(provider("a", timeout_s=0.5))
    upstream.set_behavior("a", {"kind": "stream_stall", "chunks": 4, "cut_after": 2})
    rid = new_id()
    began = time.monotonic()
    received, error = run_broken_stream(gw, sdk, rid)
    assert 0.4 < time.monotonic() - began < 3
    assert len(content_deltas(received)) == 2
    assert_proper_prefix(content_of(received), reply("a"))
    assert error.body["code"] == "stream_interrupted"
    [line] = for_request(gw.log_lines(), rid)
    assert line["error_kind"] == "partial"
    assert "timeout" in line["error"].lower()


def test_upstream_error_event_is_relayed_as_an_error_event(start, provider, upstream, sdk):
    gw = start(provider("a"))
    upstream.set_behavior("a", {"kind": "stream_error_event", "chunks": 4, "cut_after": 1})
    rid = new_id()
    received, error = run_broken_stream(gw, sdk, rid)
    assert len(content_deltas(received)) == 1
    assert_proper_prefix(content_of(received), reply("a"))
    assert "fake mid-stream error" in error.message
    [line] = for_request(gw.log_lines(), rid)
    assert line["error_kind"] == "partial"
    assert "error event" in line["error"]


def test_malformed_chunk_mid_stream_ends_with_an_error_event(start, provider, scripted, sdk):
    bad = scripted(SSE_HEAD, ROLE, chunk({"content": "Hello"}), b"data: {\"choices\": [tru\n\n", DONE)
    gw = start(provider("a", endpoint=bad.chat_url), provider("b", priority=5))
    rid = new_id()
    received, error = run_broken_stream(gw, sdk, rid)
    assert content_of(received) == "Hello"
    assert error.body["code"] == "stream_interrupted"
    [line] = for_request(gw.log_lines(), rid)
    assert line["error_kind"] == "partial"
    assert "not JSON" in line["error"]


def test_stream_without_usage_from_upstream_is_counted_and_marked_estimated(start, provider, scripted, sdk):
    words = ["Hello", " there", ", friend."]
    up = scripted(SSE_HEAD, ROLE, *(chunk({"content": w}) for w in words), chunk({}, "stop"), DONE)
    gw = start(provider("a", endpoint=up.chat_url))
    rid = new_id()
    chunks = list(sdk(gw).chat.completions.create(model="auto", messages=HELLO, stream=True,
                                                  stream_options={"include_usage": True},
                                                  extra_headers={"x-request-id": rid}))
    assert content_of(chunks) == "".join(words)
    assert up.requests[0]["stream_options"] == {"include_usage": True}
    [line] = for_request(gw.log_lines(), rid)
    assert line["success"] is True
    assert line["tokens_estimated"] is True
    assert line["prompt_tokens"] == count_tokens(PROMPT)
    assert line["completion_tokens"] == count_tokens("".join(words))
    assert line["total_tokens"] == line["prompt_tokens"] + line["completion_tokens"]


def json_answer(text: str = "whole answer") -> bytes:
    """An upstream that ignores ``stream: true`` and answers one application/json completion."""
    body = json.dumps({
        "id": "chatcmpl-whole", "object": "chat.completion", "created": 1700000000, "model": "whole-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}).encode()
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % len(body)) + body


def test_upstream_answering_whole_json_to_a_stream_is_relayed_as_one_chunk(start, provider, scripted, sdk):
    up = scripted(json_answer())
    gw = start(provider("a", endpoint=up.chat_url))
    rid = new_id()
    chunks = list(sdk(gw).chat.completions.create(model="auto", messages=HELLO, stream=True,
                                                  extra_headers={"x-request-id": rid}))
    assert content_of(chunks) == "whole answer"
    assert [c.choices[0].finish_reason for c in chunks if c.choices] == ["stop"]
    [line] = for_request(gw.log_lines(), rid)
    assert line["success"] is True and line["total_tokens"] == 5 and "tokens_estimated" not in line


def test_upstream_answering_whole_json_to_a_stream_gives_a_complete_chunk(start, provider, scripted, sdk):
    up = scripted(json_answer())
    gw = start(provider("a", endpoint=up.chat_url))
    chunks = list(sdk(gw).chat.completions.create(model="auto", messages=HELLO, stream=True))
    assert [(c.id, c.created, c.object) for c in chunks] == [("chatcmpl-whole", 1700000000, "chat.completion.chunk")]


def test_upstream_answering_whole_json_to_a_stream_still_gives_the_usage_asked_for(start, provider, scripted, sdk):
    up = scripted(json_answer())
    gw = start(provider("a", endpoint=up.chat_url))
    chunks = list(sdk(gw).chat.completions.create(model="auto", messages=HELLO, stream=True,
                                                  stream_options={"include_usage": True}))
    usages = [c.usage for c in chunks if c.usage is not None]
    assert [(u.prompt_tokens, u.completion_tokens, u.total_tokens) for u in usages] == [(3, 2, 5)]


# --- the relay is not buffered -----------------------------------------------------------------------


def test_first_content_arrives_before_the_upstream_has_finished(shared, upstream, http):
    gw = shared
    upstream.set_behavior("a", {"kind": "ok", "chunks": 4, "chunk_delay_s": 0.3})
    arrivals: list[float] = []
    began = time.monotonic()
    with http.stream("POST", gw.url + "/v1/chat/completions",
                     json={"model": "auto", "messages": HELLO, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"] \
                    and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                arrivals.append(time.monotonic() - began)
        total = time.monotonic() - began
    assert len(arrivals) == 4
    assert total >= 0.85  # three pauses of 0.3 s upstream
    assert arrivals[0] < 0.5 < total - 0.3, (arrivals, total)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert all(gap > 0.15 for gap in gaps), gaps  # each chunk as it came, not in a burst at the end


# --- a client that goes away -------------------------------------------------------------------------


def read_until_content(response: httpx.Response) -> str:
    for line in response.iter_lines():
        if line.startswith("data: {"):
            delta = json.loads(line[6:])["choices"][0]["delta"]
            if delta.get("content"):
                return delta["content"]
    raise AssertionError("the stream ended without content")


def test_client_disconnect_mid_stream_is_logged_once_as_cancelled(start, provider, upstream):
    gw = start(provider("a"), provider("b", priority=5))
    upstream.set_behavior("a", {"kind": "ok", "chunks": 8, "chunk_delay_s": 0.5})  # 3.5 s in all
    rid = new_id()
    began = time.monotonic()
    with httpx.Client(timeout=TIMEOUT) as client:
        with client.stream("POST", gw.url + "/v1/chat/completions", headers={"x-request-id": rid},
                           json={"model": "auto", "messages": HELLO, "stream": True}) as r:
            first = read_until_content(r)
    assert_proper_prefix(first, reply("a"))
    lines = gw.log_lines()  # stops the gateway: it must not wait for the upstream's 3.5 s
    assert time.monotonic() - began < 2.5
    [line] = for_request(lines, rid)
    assert line["error_kind"] == "cancelled" and line["success"] is False
    assert line["latency_ms"] < 1500
    assert upstream.calls["a"] == 1 and upstream.calls["b"] == 0


def test_client_disconnect_closes_the_upstream_connection(start, provider, scripted):
    up = scripted(SSE_HEAD, ROLE, chunk({"content": "one"}), *([0.5, chunk({"content": " more"})] * 10),
                  chunk({}, "stop"), DONE)
    gw = start(provider("a", endpoint=up.chat_url))
    rid = new_id()
    with httpx.Client(timeout=TIMEOUT) as client:
        with client.stream("POST", gw.url + "/v1/chat/completions", headers={"x-request-id": rid},
                           json={"model": "auto", "messages": HELLO, "stream": True}) as r:
            assert read_until_content(r) == "one"
        closed = time.monotonic()
    assert up.wait_outcomes(1, timeout=3) == ["peer_closed"]
    assert time.monotonic() - closed < 2  # well before the 5 s the script would have taken
    [line] = for_request(gw.log_lines(), rid)
    assert line["error_kind"] == "cancelled"


def test_client_disconnect_while_the_upstream_is_silent(start, provider, scripted):
    """Gone while the gateway waits for the upstream's next chunk: cancelled, not a timeout."""
    up = scripted(SSE_HEAD, ROLE, chunk({"content": "one"}), 5.0, chunk({}, "stop"), DONE)
    gw = start(provider("a", endpoint=up.chat_url, timeout_s=10))
    rid = new_id()
    with httpx.Client(timeout=TIMEOUT) as client:
        with client.stream("POST", gw.url + "/v1/chat/completions", headers={"x-request-id": rid},
                           json={"model": "auto", "messages": HELLO, "stream": True}) as r:
            assert read_until_content(r) == "one"
    assert up.wait_outcomes(1, timeout=3) == ["peer_closed"]
    [line] = for_request(gw.log_lines(), rid)
    assert line["error_kind"] == "cancelled"


def test_sdk_closing_the_stream_early_is_cancelled(start, provider, upstream, sdk):
    gw = start(provider("a"))
    upstream.set_behavior("a", {"kind": "ok", "chunks": 6, "chunk_delay_s": 0.4})
    rid = new_id()
    stream = sdk(gw).chat.completions.create(model="auto", messages=HELLO, stream=True,
                                             extra_headers={"x-request-id": rid})
    for c in stream:
        if c.choices and c.choices[0].delta.content:
            break
    stream.close()
    [line] = for_request(gw.log_lines(), rid)
    assert line["error_kind"] == "cancelled"


def test_client_disconnect_before_any_content_cancels_the_upstream_call(start, provider, scripted):
    """Gone while the gateway still waits for the upstream's first byte: one cancelled line, no fallback."""
    up = scripted(3.0, SSE_HEAD, ROLE, chunk({"content": "late"}), chunk({}, "stop"), DONE)
    gw = start(provider("a", endpoint=up.chat_url), provider("b", priority=5))
    rid = new_id()
    with httpx.Client(timeout=httpx.Timeout(TIMEOUT, read=0.3)) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(gw.url + "/v1/chat/completions", headers={"x-request-id": rid},
                        json={"model": "auto", "messages": HELLO, "stream": True})
    assert up.wait_outcomes(1, timeout=2.5) == ["peer_closed"]
    lines = gw.log_lines()
    assert [(l["provider_id"], l["error_kind"]) for l in for_request(lines, rid)] == [("a/a", "cancelled")]
    assert lines == for_request(lines, rid)  # b was never tried for a client that had left


def in_flight(http: httpx.Client, gw, provider_id: str) -> int:
    providers = http.get(gw.url + "/health").json()["providers"]
    return next(p["in_flight"] for p in providers if p["id"] == provider_id)


def wait_in_flight_zero(http: httpx.Client, gw, provider_id: str, timeout: float = 2.0) -> int:
    deadline = time.monotonic() + timeout
    while (count := in_flight(http, gw, provider_id)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


def test_cancelled_streams_release_the_providers_concurrency_slot(start, provider, upstream, http):
    """Each attempt is reported exactly once, so max_concurrency: 1 is free again after each cancel."""
    gw = start(provider("a", priority=1, max_concurrency=1), provider("b", priority=2))
    upstream.set_behavior("a", {"kind": "ok", "chunks": 6, "chunk_delay_s": 0.3})
    for _ in range(3):
        with httpx.Client(timeout=TIMEOUT) as client:
            with client.stream("POST", gw.url + "/v1/chat/completions",
                               json={"model": "auto", "messages": HELLO, "stream": True}) as r:
                assert r.headers["x-modelbroker-provider"] == "a/a"
                assert in_flight(http, gw, "a/a") == 1
                read_until_content(r)  # leaving iter_lines() early closes the connection
        assert wait_in_flight_zero(http, gw, "a/a") == 0
    upstream.reset()
    r = http.post(gw.url + "/v1/chat/completions", json={"model": "auto", "messages": HELLO, "stream": True})
    assert r.status_code == 200
    assert r.headers["x-modelbroker-provider"] == "a/a"
    assert wait_in_flight_zero(http, gw, "a/a") == 0
    kinds = [l.get("error_kind") for l in gw.log_lines()]
    assert kinds == ["cancelled", "cancelled", "cancelled", None]


def test_generate_client_disconnect_mid_stream_is_cancelled(start, provider, upstream, http):
    gw = start(provider("a"))
    upstream.set_behavior("a", {"kind": "ok", "chunks": 6, "chunk_delay_s": 0.4})
    rid = new_id()
    with http.stream("POST", gw.url + "/generate", json={"prompt": PROMPT, "stream": True},
                     headers={"x-request-id": rid}) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and "delta" in json.loads(line[6:]):
                break
    [line] = for_request(gw.log_lines(), rid)
    assert line["error_kind"] == "cancelled"


# --- /generate with stream: true ------------------------------------------------------------------------


def generate_events(http: httpx.Client, gw, body: dict, rid: str | None = None) -> tuple[httpx.Response, list[dict]]:
    headers = {"x-request-id": rid} if rid else {}
    with http.stream("POST", gw.url + "/generate", json=body, headers=headers) as r:
        text = r.read().decode()
    return r, [json.loads(e) for e in data_events(text)]


def test_generate_stream_deltas_then_summary(start, provider, upstream, http):
    gw = start(provider("a", api_key=SECRET))
    upstream.set_behavior("a", {"kind": "ok", "chunks": 5})
    rid = new_id()
    r, events = generate_events(http, gw, {"prompt": PROMPT, "stream": True}, rid)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    *deltas, summary = events
    assert [set(e) for e in deltas] == [{"delta"}] * 5
    assert "".join(e["delta"] for e in deltas) == reply("a")
    assert summary["done"] is True
    assert summary["modelUsed"] == "a"
    assert summary["tokens"] == 10
    assert summary["cost"] == pytest.approx(10 * PRICE / 1000)
    assert summary["provider"] == "a/a"
    assert summary["attempts"] == 1
    assert summary["request_id"] == rid
    assert "response" not in summary
    [line] = for_request(gw.log_lines(), rid)
    assert line["success"] is True and line["total_tokens"] == 10


def test_generate_stream_falls_back_before_first_content(start, provider, upstream, http):
    gw = start(provider("a", priority=1), provider("b", priority=2))
    upstream.set_behavior("a", {"kind": "stream_cut", "cut_after": 0})
    rid = new_id()
    r, events = generate_events(http, gw, {"prompt": PROMPT, "stream": True}, rid)
    *deltas, summary = events
    assert "".join(e["delta"] for e in deltas) == reply("b")
    assert (summary["provider"], summary["attempts"], summary["modelUsed"]) == ("b/b", 2, "b")
    lines = for_request(gw.log_lines(), rid)
    assert [(l["provider_id"], l.get("error_kind")) for l in lines] == [("a/a", "connection"), ("b/b", None)]


def test_generate_stream_cut_mid_stream_ends_with_an_error(start, provider, upstream, http):
    gw = start(provider("a"), provider("b", priority=5))
    upstream.set_behavior("a", {"kind": "stream_cut", "chunks": 4, "cut_after": 2})
    rid = new_id()
    r, events = generate_events(http, gw, {"prompt": PROMPT, "stream": True}, rid)
    *deltas, last = events
    assert len(deltas) == 2
    assert_proper_prefix("".join(e["delta"] for e in deltas), reply("a"))
    assert set(last) == {"error"} and last["error"]["code"] == "stream_interrupted"
    assert not any(e.get("done") for e in events)
    [line] = for_request(gw.log_lines(), rid)
    assert line["error_kind"] == "partial"


def test_generate_stream_all_failing_is_502(shared, upstream, http):
    gw = shared
    upstream.set_behavior("*", {"kind": "status", "status": 503})
    r = http.post(gw.url + "/generate", json={"prompt": PROMPT, "stream": True})
    assert r.status_code == 502
    assert [(a["provider"], a["status"]) for a in r.json()["error"]["attempts"]] == [("a/a", 503), ("b/b", 503)]


# --- one line per attempt, no key anywhere -----------------------------------------------------------------


def test_every_streamed_request_leaves_one_line_per_attempt_and_no_key(start, provider, upstream, http):
    gw = start(provider("a", priority=1, api_key=SECRET, timeout_s=0.5),
               provider("b", priority=2, api_key=SECRET))
    chat = gw.url + "/v1/chat/completions"
    # (behaviour of a, path, body extra, expected (provider, error_kind) per attempt)
    scenarios = [
        (None, chat, {}, [("a/a", None)]),
        (None, chat, {"stream_options": {"include_usage": True}}, [("a/a", None)]),
        ({"kind": "status", "status": 500}, chat, {}, [("a/a", "status"), ("b/b", None)]),
        ({"kind": "stream_cut", "cut_after": 0}, chat, {}, [("a/a", "connection"), ("b/b", None)]),
        ({"kind": "stream_cut", "cut_after": 2}, chat, {}, [("a/a", "partial")]),
        ({"kind": "stream_error_event", "cut_after": 1}, chat, {}, [("a/a", "partial")]),
        ({"kind": "stream_stall", "cut_after": 1}, chat, {}, [("a/a", "partial")]),
        ({"kind": "stream_error_event", "cut_after": 0}, gw.url + "/generate", {},
         [("a/a", "error_event"), ("b/b", None)]),
        ({"kind": "stream_cut", "cut_after": 1}, gw.url + "/generate", {}, [("a/a", "partial")]),
    ]
    expected: dict[str, list] = {}
    bodies: list[str] = []
    for behavior, url, extra, attempts in scenarios:
        upstream.reset()
        if behavior:
            upstream.set_behavior("a", behavior)
        rid = new_id()
        body = {"prompt": PROMPT} if url.endswith("/generate") else {"model": "auto", "messages": HELLO}
        with http.stream("POST", url, json={**body, "stream": True, **extra}, headers={"x-request-id": rid}) as r:
            assert r.status_code == 200
            bodies.append(r.read().decode())
            assert r.headers["x-modelbroker-attempts"] == str(len(attempts))
        expected[rid] = attempts
    # a client that leaves
    upstream.reset()
    upstream.set_behavior("a", {"kind": "ok", "chunks": 6, "chunk_delay_s": 0.4})
    rid = new_id()
    with http.stream("POST", chat, json={"model": "auto", "messages": HELLO, "stream": True},
                     headers={"x-request-id": rid}) as r:
        bodies.append(read_until_content(r))
    expected[rid] = [("a/a", "cancelled")]
    # all failing: a JSON 502, two lines
    upstream.reset()
    upstream.set_behavior("*", {"kind": "status", "status": 500})
    rid = new_id()
    r = http.post(chat, json={"model": "auto", "messages": HELLO, "stream": True}, headers={"x-request-id": rid})
    assert r.status_code == 502
    bodies.append(r.text)
    expected[rid] = [("a/a", "status"), ("b/b", "status")]

    lines = gw.log_lines()
    assert len(lines) == sum(len(v) for v in expected.values())
    for rid, attempts in expected.items():
        got = for_request(lines, rid)
        assert [l["attempt"] for l in got] == list(range(1, len(attempts) + 1)), rid
        assert [(l["provider_id"], l.get("error_kind")) for l in got] == attempts, rid
    for text in [*bodies, gw.log_file.read_text()]:
        assert_no_secret(text)
    assert all(r["headers"].get("authorization") == f"Bearer {SECRET}" for r in upstream.requests)


@pytest.mark.parametrize("script", [
    (b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
     + json.dumps({"error": {"message": f"Incorrect API key provided: {SECRET}", "type": "invalid_request_error",
                             "code": "invalid_api_key"}}).encode(),),
    (SSE_HEAD, ROLE, b"data: {broken " + SECRET.encode() + b"\n\n"),
    (SSE_HEAD, ROLE, chunk({"content": "Hi"}), sse({"error": {"message": f"key {SECRET} revoked"}})),
    (SSE_HEAD, ROLE, chunk({"content": "Hi"}), b"data: {broken " + SECRET.encode() + b"\n\n"),
], ids=["401-before-content", "malformed-before-content", "error-event-mid-stream", "malformed-mid-stream"])
def test_an_upstream_echoing_the_key_never_leaks_it(start, provider, scripted, http, script):
    up = scripted(*script)
    gw = start(provider("a", endpoint=up.chat_url, api_key=SECRET), provider("b", priority=5, api_key=SECRET))
    texts = []
    for url, body in [(gw.url + "/v1/chat/completions", {"model": "auto", "messages": HELLO, "stream": True}),
                      (gw.url + "/v1/chat/completions", {"model": "a/a", "messages": HELLO, "stream": True}),
                      (gw.url + "/generate", {"prompt": PROMPT, "stream": True})]:
        with http.stream("POST", url, json=body) as r:
            texts.append(r.read().decode())
    assert up.requests  # the scripted upstream was called
    for text in [*texts, gw.log_file.read_text() if gw.log_file.exists() else "", *map(json.dumps, gw.log_lines())]:
        assert_no_secret(text)

