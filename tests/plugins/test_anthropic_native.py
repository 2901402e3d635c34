"""plugins/anthropic/native.py: a request in Anthropic's own format sent as it came, the answer given
back as the upstream wrote it (whole, or one chunk per event), with the core's accounting still fed."""

from __future__ import annotations

import copy

import pytest

from modelbroker import ChatRequest, ErrorKind, Native, ProviderError, Usage
from modelbroker._config.providers import ProviderConfig
from modelbroker._upstream.client import UpstreamHTTP
from modelbroker.plugins import anthropic
from modelbroker.plugins.anthropic.native import (
    FORMAT,
    NativeStream,
    message_events,
    native_body,
    native_headers,
)

SECRET = "sk-ant-native-test-SECRET-0123456789abcdef"
BODY = {"model": "claude-client-name", "max_tokens": 30, "top_k": 4,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello big world"}]}],
        "thinking": {"type": "enabled", "budget_tokens": 16}}


def native_request(body: dict | None = None, stream: bool = False) -> ChatRequest:
    body = copy.deepcopy(body or BODY)
    return ChatRequest(messages=[{"role": "user", "content": "hello big world"}], stream=stream,
                       native=Native(FORMAT, body))


def claude(upstream, **fields) -> ProviderConfig:
    return ProviderConfig(name="claude", type="anthropic", endpoint=upstream.endpoint("anthropic"), model="claude-t",
                          api_key=SECRET, cost_per_1k_tokens=0.0, **fields)


def test_native_body_sets_model_and_stream_and_leaves_the_clients_alone():
    request = native_request({**BODY, "stream": False})
    assert native_body("claude-t", request) == {**BODY, "model": "claude-t"}
    request.stream = True
    assert native_body("claude-t", request) == {**BODY, "model": "claude-t", "stream": True}
    assert request.native.body["model"] == "claude-client-name"  # a fallback to another provider sees it as sent


def test_native_headers_forward_the_clients_version_and_betas():
    class WithHeaders:  # what the messages surface hands over: the Native and the headers that go with it
        format, body = FORMAT, BODY
        headers = {"anthropic-version": "2099-01-01", "anthropic-beta": "a,b", "x-api-key": "client's"}

    request = ChatRequest(messages=[], native=WithHeaders())
    headers = native_headers(request, {"anthropic-version": "2023-06-01", "x-api-key": SECRET})
    assert headers == {"anthropic-version": "2099-01-01", "anthropic-beta": "a,b", "x-api-key": SECRET}
    assert native_headers(native_request(), {"anthropic-version": "2023-06-01"}) == {"anthropic-version": "2023-06-01"}


async def test_complete_sends_the_body_and_keeps_the_message(upstream):
    async with UpstreamHTTP() as http:
        completion = await anthropic.complete(claude(upstream), native_request(), http)
    assert upstream.requests[-1]["json"] == {**BODY, "model": "claude-t"}
    assert completion.native.format == FORMAT and completion.native.body["id"].startswith("msg_fake_")
    assert completion.native.body["content"] == [{"type": "text", "text": "Fake reply from claude-t: hello big world"}]
    assert completion.text == "Fake reply from claude-t: hello big world"
    assert completion.usage == Usage(5, 7, 12, cached_tokens=0)
    assert completion.raw["object"] == "chat.completion"


async def test_open_stream_gives_one_chunk_per_event(upstream):
    async with UpstreamHTTP() as http:
        chunks = [c async for c in await anthropic.open_stream(claude(upstream), native_request(stream=True), http)]
    assert upstream.requests[-1]["json"]["stream"] is True
    assert [c.native["type"] for c in chunks] == [
        "message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert [c.has_content for c in chunks[:4]] == [False, False, False, True]  # content from the first delta on
    assert "".join(c.text for c in chunks) == "Fake reply from claude-t: hello big world"
    assert [(i, c.usage) for i, c in enumerate(chunks) if c.usage] == [(7, Usage(5, 7, 12, cached_tokens=0))]
    assert [(i, c.finish_reason) for i, c in enumerate(chunks) if c.finish_reason] == [(7, "stop")]
    assert all(c.raw == {} and c.model == "claude-t" for c in chunks)


@pytest.mark.parametrize("behavior, kind", [
    ({"kind": "stream_cut", "cut_after": 1}, ErrorKind.CONNECTION),
    ({"kind": "stream_error_event", "cut_after": 1}, ErrorKind.ERROR_EVENT),
])
async def test_a_broken_native_stream_raises(upstream, behavior, kind):
    upstream.set_behavior("claude-t", behavior)
    async with UpstreamHTTP() as http:
        chunks = await anthropic.open_stream(claude(upstream), native_request(stream=True), http)
        with pytest.raises(ProviderError) as caught:
            async for _ in chunks:
                pass
    assert caught.value.kind is kind


def test_native_stream_marks_thinking_and_server_tool_blocks_as_content():
    reader = NativeStream("m")
    start = reader.chunk({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {
        "input_tokens": 10, "cache_read_input_tokens": 90, "cache_creation_input_tokens": 5, "output_tokens": 1}}})
    assert not start.has_content and start.model == "claude-x"
    assert not reader.chunk({"type": "content_block_start", "index": 0,
                             "content_block": {"type": "thinking", "thinking": ""}}).has_content
    assert reader.chunk({"type": "content_block_delta", "index": 0,
                         "delta": {"type": "thinking_delta", "thinking": "hmm"}}).has_content
    assert reader.chunk({"type": "content_block_start", "index": 1, "content_block": {
        "type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}}).has_content
    end = reader.chunk({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}})
    assert end.usage == Usage(105, 9, 114, cached_tokens=90) and end.finish_reason == "stop"
    assert not reader.done and reader.chunk({"type": "message_stop"}).native == {"type": "message_stop"}
    assert reader.done


def test_message_events_tell_a_whole_message_as_a_stream():
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "tool_use",
               "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 4},
               "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                           {"type": "text", "text": "hi"},
                           {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
                           {"type": "redacted_thinking", "data": "xyz"}]}
    events = list(message_events(message))
    assert [e["type"] for e in events] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_stop", "message_delta", "message_stop"]
    assert events[0]["message"]["content"] == [] and events[0]["message"]["stop_reason"] is None
    assert events[4]["delta"] == {"type": "signature_delta", "signature": "sig"}
    assert events[10]["delta"] == {"type": "input_json_delta", "partial_json": '{"a":1}'}
    assert events[12]["content_block"] == {"type": "redacted_thinking", "data": "xyz"}
    assert events[14]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


def test_the_adapter_states_its_features():
    features = anthropic.AnthropicMessages.features
    assert {"tools", "parallel_tool_calls", "json_object", "json_schema", "images"} <= features
    assert not features & {"n", "seed", "logprobs", "audio"}


def test_a_request_the_adapter_cannot_carry_goes_elsewhere(gateway, provider, upstream):
    claude_entry = provider("claude", model="claude-t", type="anthropic", priority=1)
    alone = gateway({"providers": [claude_entry]})
    refused = alone.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "n": 2})
    assert refused.status_code == 400 and "n" in refused.json()["error"]["message"]
    both = gateway({"providers": [claude_entry, provider("gpt", priority=2)]})
    answer = both.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "seed": 7})
    assert answer.status_code == 200 and answer.headers["x-modelbroker-provider"] == "gpt/gpt"
    assert "claude/claude-t (lacks seed)" in answer.headers["x-modelbroker-skipped"]
