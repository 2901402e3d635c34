"""modelbroker.fake_upstream speaking Anthropic's and Gemini's wire formats (the adapters' fake formats, plugins/*/fake.py).

The same behaviour kinds as for OpenAI, over a real socket, checked with a plain
httpx client against the shapes the real APIs send.
"""
from __future__ import annotations

import json
import time

import httpx
import orjson
import pytest

from modelbroker import hookimpl
from modelbroker._plugins.manager import make_plugin_manager
from modelbroker.fake_upstream import FakeUpstream
from modelbroker.fake_upstream._server import installed_formats
from modelbroker.fake_upstream.formats import Reply

KEY = "sk-fake-formats-key-0123456789"
ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
MESSAGES = {"model": "claude-t", "max_tokens": 64, "system": "be brief",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hello big world"}]}]}
CONTENTS = {"systemInstruction": {"parts": [{"text": "be brief"}]},
            "contents": [{"role": "user", "parts": [{"text": "hello big world"}]}]}


@pytest.fixture
def client():
    with httpx.Client(timeout=3.0) as c:
        yield c


def sse(lines, into: list | None = None) -> list[tuple[str | None, dict]]:
    """(event name, data) pairs; appends to ``into`` as they arrive (kept if the stream fails)."""
    out = [] if into is None else into
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            out.append((name, json.loads(line[len("data: "):])))
            name = None
    return out


def claude(client: httpx.Client, upstream: FakeUpstream, headers=ANTHROPIC_HEADERS, **fields) -> httpx.Response:
    return client.post(upstream.endpoint("anthropic"), json={**MESSAGES, **fields}, headers=headers)


def gemini(client: httpx.Client, upstream: FakeUpstream, model: str = "gem-t", method: str = "generateContent",
           body=None, headers=None, query: str = "") -> httpx.Response:
    url = f"{upstream.endpoint('gemini')}/{model}:{method}{query}"
    return client.post(url, json=CONTENTS if body is None else body,
                       headers={"x-goog-api-key": KEY} if headers is None else headers)


# --- Anthropic -----------------------------------------------------------------------------


def test_anthropic_message_shape_and_usage(upstream, client):
    r = claude(client, upstream)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"].startswith("msg_fake_") and body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == "claude-t" and body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert body["content"] == [{"type": "text", "text": "Fake reply from claude-t: hello big world"}]
    assert body["usage"] == {"input_tokens": 2 + 3, "output_tokens": 7,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    assert upstream.calls["claude-t"] == 1 and upstream.requests[-1]["model"] == "claude-t"


def test_anthropic_requires_key_and_max_tokens(upstream, client):
    r = claude(client, upstream, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 401
    assert r.json() == {"type": "error", "error": {"type": "authentication_error",
                                                   "message": "x-api-key header is required"}}
    r = client.post(upstream.endpoint("anthropic"), json={"model": "claude-t", "messages": []}, headers=ANTHROPIC_HEADERS)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in r.json()["error"]["message"]
    assert upstream.calls["claude-t"] == 0 and len(upstream.requests) == 2


def test_anthropic_tools_give_tool_use(upstream, client):
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    body = claude(client, upstream, tools=tools).json()
    assert body["stop_reason"] == "tool_use"
    assert body["content"] == [{"type": "tool_use", "id": "toolu_fake_1", "name": "get_weather", "input": {}}]


def test_anthropic_stream_event_sequence(upstream, client):
    with client.stream("POST", upstream.endpoint("anthropic"), json={**MESSAGES, "stream": True},
                       headers=ANTHROPIC_HEADERS) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse(r.iter_lines())
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    start = events[0][1]["message"]
    assert start["content"] == [] and start["model"] == "claude-t" and start["usage"]["input_tokens"] == 5
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "Fake reply from claude-t: hello big world"
    assert events[7][1]["delta"]["stop_reason"] == "end_turn" and events[7][1]["usage"] == {"output_tokens": 7}


def test_anthropic_tool_use_stream(upstream, client):
    payload = {**MESSAGES, "stream": True, "tools": [{"name": "lookup", "input_schema": {"type": "object"}}]}
    with client.stream("POST", upstream.endpoint("anthropic"), json=payload, headers=ANTHROPIC_HEADERS) as r:
        events = sse(r.iter_lines())
    block = next(d for n, d in events if n == "content_block_start")["content_block"]
    assert block == {"type": "tool_use", "id": "toolu_fake_1", "name": "lookup", "input": {}}
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert deltas == [{"type": "input_json_delta", "partial_json": "{}"}]
    assert next(d for n, d in events if n == "message_delta")["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize("status, error_type", [(429, "rate_limit_error"), (500, "api_error"),
                                                (529, "overloaded_error")])
def test_anthropic_status_in_anthropic_error_shape(upstream, client, status, error_type):
    upstream.set_behavior("claude-t", {"kind": "status", "status": status, "headers": {"retry-after": "1"}})
    r = claude(client, upstream)
    assert r.status_code == status and r.headers["retry-after"] == "1"
    assert r.json() == {"type": "error", "error": {"type": error_type, "message": f"fake upstream error {status}"}}


def test_anthropic_error_code_overrides_type(upstream, client):
    upstream.set_behavior("claude-t", {"kind": "status", "status": 400, "error_code": "not_found_error"})
    assert claude(client, upstream).json()["error"]["type"] == "not_found_error"


def test_anthropic_malformed_drop_and_empty(upstream, client):
    upstream.set_behavior("claude-t", "malformed")
    with pytest.raises(json.JSONDecodeError):
        json.loads(claude(client, upstream).content)
    upstream.set_behavior("claude-t", "empty_choices")
    assert claude(client, upstream).json()["content"] == []
    upstream.set_behavior("claude-t", "drop")
    with pytest.raises(httpx.RemoteProtocolError):
        claude(client, upstream)


def test_anthropic_stream_cut_has_no_message_stop(upstream, client):
    upstream.set_behavior("claude-t", {"kind": "stream_cut", "cut_after": 1})
    seen: list = []
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", upstream.endpoint("anthropic"), json={**MESSAGES, "stream": True},
                           headers=ANTHROPIC_HEADERS) as r:
            sse(r.iter_lines(), seen)
    assert [n for n, _ in seen] == ["message_start", "content_block_start", "ping", "content_block_delta"]


def test_anthropic_stream_error_event(upstream, client):
    upstream.set_behavior("claude-t", {"kind": "stream_error_event", "cut_after": 2})
    with client.stream("POST", upstream.endpoint("anthropic"), json={**MESSAGES, "stream": True},
                       headers=ANTHROPIC_HEADERS) as r:
        events = sse(r.iter_lines())
    assert [n for n, _ in events][-3:] == ["content_block_delta", "content_block_delta", "error"]
    assert events[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "fake mid-stream error"}}


def test_anthropic_delay_and_chunk_delay(upstream, client):
    upstream.set_behavior("claude-t", {"delay_s": 0.2, "chunks": 3, "chunk_delay_s": 0.1})
    start = time.monotonic()
    with client.stream("POST", upstream.endpoint("anthropic"), json={**MESSAGES, "stream": True},
                       headers=ANTHROPIC_HEADERS) as r:
        events = sse(r.iter_lines())
    assert 0.4 <= time.monotonic() - start < 1.2
    assert sum(1 for n, _ in events if n == "content_block_delta") == 3


# --- Gemini ----------------------------------------------------------------------------------


def test_gemini_response_shape_and_usage(upstream, client):
    r = gemini(client, upstream)
    assert r.status_code == 200
    body = r.json()
    candidate = body["candidates"][0]
    assert candidate["content"] == {"parts": [{"text": "Fake reply from gem-t: hello big world"}], "role": "model"}
    assert candidate["finishReason"] == "STOP" and body["modelVersion"] == "gem-t"
    assert body["usageMetadata"] == {"promptTokenCount": 5, "candidatesTokenCount": 7, "totalTokenCount": 12}
    assert upstream.calls["gem-t"] == 1
    assert upstream.requests[-1]["model"] == "gem-t" and upstream.requests[-1]["json"] == CONTENTS


def test_gemini_key_in_header_or_query_else_403(upstream, client):
    r = gemini(client, upstream, headers={})
    assert r.status_code == 403
    assert r.json()["error"]["status"] == "PERMISSION_DENIED" and r.json()["error"]["code"] == 403
    assert gemini(client, upstream, headers={}, query=f"?key={KEY}").status_code == 200
    assert upstream.calls["gem-t"] == 1


def test_gemini_bad_body_and_stream_without_sse(upstream, client):
    r = gemini(client, upstream, body={"prompt": "x"})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert gemini(client, upstream, method="streamGenerateContent").status_code == 400


def test_gemini_behaviour_chosen_by_the_model_in_the_url(upstream, client):
    upstream.set_behavior("gem-bad", {"kind": "status", "status": 429})
    r = gemini(client, upstream, model="gem-bad")
    assert r.status_code == 429
    assert r.json() == {"error": {"code": 429, "message": "fake upstream error 429", "status": "RESOURCE_EXHAUSTED"}}
    assert gemini(client, upstream, model="gem-t").status_code == 200
    assert gemini(client, upstream, model="fail-503").json()["error"]["status"] == "UNAVAILABLE"


def test_gemini_tools_give_function_call(upstream, client):
    body = {**CONTENTS, "tools": [{"functionDeclarations": [{"name": "get_weather"}]}]}
    candidate = gemini(client, upstream, body=body).json()["candidates"][0]
    assert candidate["content"]["parts"] == [{"functionCall": {"name": "get_weather", "args": {}}}]


def test_gemini_blocked_prompt(upstream, client):
    upstream.set_behavior("gem-t", "empty_choices")
    body = gemini(client, upstream).json()
    assert "candidates" not in body and body["promptFeedback"] == {"blockReason": "SAFETY"}


def test_gemini_sse_stream(upstream, client):
    with client.stream("POST", f"{upstream.endpoint('gemini')}/gem-t:streamGenerateContent?alt=sse", json=CONTENTS,
                       headers={"x-goog-api-key": KEY}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read()
    assert raw.count(b"\r\n\r\n") == 4 and b"[DONE]" not in raw
    chunks = [json.loads(line[len(b"data: "):]) for line in raw.split(b"\r\n\r\n") if line]
    text = "".join(p["text"] for c in chunks for p in c["candidates"][0]["content"]["parts"])
    assert text == "Fake reply from gem-t: hello big world"
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, None, None, "STOP"]
    assert chunks[0]["usageMetadata"] == {"promptTokenCount": 5, "totalTokenCount": 5}
    assert chunks[-1]["usageMetadata"] == {"promptTokenCount": 5, "candidatesTokenCount": 7, "totalTokenCount": 12}


def test_gemini_stream_cut_and_error_event(upstream, client):
    url = f"{upstream.endpoint('gemini')}/gem-t:streamGenerateContent?alt=sse"
    upstream.set_behavior("gem-t", {"kind": "stream_cut", "cut_after": 1})
    seen: list = []
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", url, json=CONTENTS, headers={"x-goog-api-key": KEY}) as r:
            sse(r.iter_lines(), seen)
    assert len(seen) == 1
    upstream.set_behavior("gem-t", {"kind": "stream_error_event", "cut_after": 2})
    with client.stream("POST", url, json=CONTENTS, headers={"x-goog-api-key": KEY}) as r:
        events = sse(r.iter_lines())
    assert len(events) == 3
    assert events[-1][1] == {"error": {"code": 500, "message": "fake mid-stream error", "status": "INTERNAL"}}


def test_the_openai_format_is_unchanged_beside_the_others(upstream, client):
    r = client.post(upstream.chat_url, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.json()["choices"][0]["message"]["content"] == "Fake reply from m: hi"
    assert claude(client, upstream).status_code == 200 and gemini(client, upstream).status_code == 200
    assert upstream.calls == {"m": 1, "claude-t": 1, "gem-t": 1}


# --- a format of a third party's ------------------------------------------------------------


class PlainFormat:
    """A made-up wire format: ``POST /plain/<model>``, a text in, ``{"text": ...}`` out."""

    def endpoint(self, base_url):
        return base_url + "/plain"

    def call(self, request):
        if request.method != "POST" or not request.path.startswith("/plain/"):
            return None
        return PlainCall(request.path.removeprefix("/plain/"), request.payload)


class PlainCall:
    stream = False

    def __init__(self, model, payload):
        self.model, self.payload = model, payload

    def reply(self, reply, chunks):
        text = str((self.payload or {}).get("text", ""))
        return Reply.build(self.model, [text], text, None, reply, chunks)

    def completion(self, reply):
        return orjson.dumps({"text": reply.text})

    def error(self, status, code):
        return orjson.dumps({"problem": f"plain error {status}"})

    def empty(self, reply):
        return b"{}"

    def malformed(self):
        return b"{"


class PlainPlugin:
    @hookimpl
    def register_fake_formats(self, register):
        register("plain", PlainFormat())


def test_hook_register_fake_formats():
    """An adapter's fake format: the fake answers in it, and its behaviours work in it too."""
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(PlainPlugin(), name="plain")
    with FakeUpstream(formats=installed_formats(pm)) as fake, httpx.Client(timeout=10) as client:
        assert list(fake.formats) == ["plain"]
        url = fake.endpoint("plain") + "/tiny"
        assert client.post(url, json={"text": "hello"}).json() == {"text": "Fake reply from tiny: hello"}
        fake.set_behavior("tiny", {"kind": "status", "status": 503})
        failed = client.post(url, json={"text": "hello"})
        assert (failed.status_code, failed.json()) == (503, {"problem": "plain error 503"})
        assert fake.calls["tiny"] == 2 and fake.requests[0]["model"] == "tiny"
        with pytest.raises(KeyError, match="speaks no format for type 'openai'; it speaks: plain"):
            fake.endpoint("openai")
