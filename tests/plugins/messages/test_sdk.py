"""``POST /v1/messages`` through the official ``anthropic`` SDK, against an Anthropic provider
(the body passed through as sent) and an OpenAI one (translated both ways)."""

from __future__ import annotations

import json

import anthropic
import pytest

from .conftest import MODELS, reply_of, sdk

WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
HELLO = [{"role": "user", "content": "hello big world"}]


def sent(upstream) -> dict:
    """The body of the upstream's last request."""
    return upstream.requests[-1]["json"]


def sse_events(gw, body: dict, **headers) -> list[tuple[str, dict]]:
    """The gateway's raw stream for ``body``: (event name, data) pairs, pings included (the SDK skips them)."""
    events, name = [], None
    with gw.client.stream("POST", "/v1/messages", json={**body, "stream": True}, headers=headers) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                name = None
    return events


def test_create_plain(messages_gateway, upstream, kind):
    gw = messages_gateway(kind)
    message = sdk(gw).messages.create(model="auto", max_tokens=50, messages=HELLO)
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == reply_of(kind, "hello big world")
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.model == MODELS[kind]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 7)
    assert message.usage.cache_read_input_tokens == 0
    if kind == "gemini":
        assert upstream.requests[-1]["path"] == "/v1beta/models/gemini-t:generateContent"
        assert sent(upstream)["generationConfig"]["maxOutputTokens"] == 50
    else:
        assert sent(upstream)["max_tokens"] == 50 and sent(upstream)["model"] == MODELS[kind]


def test_anthropic_provider_gets_the_body_as_sent(messages_gateway, upstream):
    """Native pass-through: every field the client sent reaches the upstream untouched (cache_control,
    top_k, thinking, a document), but model; the client's anthropic-* headers go along, its key does not."""
    gw = messages_gateway("anthropic")
    system = [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]
    messages = [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "the doc"},
         "citations": {"enabled": True}},
        {"type": "text", "text": "hello big world", "cache_control": {"type": "ephemeral", "ttl": "5m"}}]}]
    fields = {"system": system, "messages": messages, "max_tokens": 64, "stop_sequences": ["END"],
              "metadata": {"user_id": "u-1"}, "thinking": {"type": "enabled", "budget_tokens": 32}}
    sampling = {"top_k": 5, "top_p": 0.9, "temperature": 1.0}  # this SDK takes them only as extra_body
    message = sdk(gw, api_key="client-key").messages.create(
        model="auto", **fields, extra_body=sampling, extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14", "anthropic-version": "2099-01-01"})
    assert message.content[0].text == "Fake reply from claude-t: hello big world"
    request = upstream.requests[-1]
    assert request["json"] == {**fields, **sampling, "model": "claude-t"}
    assert request["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert request["headers"]["anthropic-version"] == "2099-01-01"  # the client's: its body was written for it
    assert request["headers"]["x-api-key"] == "fake-key-for-tests"
    assert "client-key" not in repr(request["headers"])


def test_without_the_clients_version_the_providers_is_sent(messages_gateway, upstream):
    gw = messages_gateway("anthropic", options={"anthropic_version": "2024-02-02"})
    assert gw.post("/v1/messages", json={"model": "auto", "max_tokens": 9, "messages": HELLO}).status_code == 200
    headers = upstream.requests[-1]["headers"]
    assert headers["anthropic-version"] == "2024-02-02" and "anthropic-beta" not in headers


def test_openai_provider_gets_the_request_translated(messages_gateway, upstream):
    gw = messages_gateway("openai")
    sdk(gw).messages.create(
        model="auto", max_tokens=64, system=[{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}],
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]}],
        stop_sequences=["END"], metadata={"user_id": "u-1"}, extra_body={"top_k": 5, "top_p": 0.9, "temperature": 0.5})
    body = sent(upstream)
    assert body["messages"] == [
        {"role": "system", "content": "be brief\n\nbe kind"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]
    assert {k: body[k] for k in ("max_tokens", "temperature", "top_p", "stop", "user")} == {
        "max_tokens": 64, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "user": "u-1"}
    assert "top_k" not in body and "system" not in body and "metadata" not in body


def test_tool_use_then_tool_result(messages_gateway, upstream, kind):
    gw = messages_gateway(kind)
    client = sdk(gw)
    asked = [{"role": "user", "content": "weather in Paris?"}]
    message = client.messages.create(model="auto", max_tokens=64, messages=asked, tools=[WEATHER],
                                     tool_choice={"type": "auto"})
    assert message.stop_reason == "tool_use"
    (call,) = message.content
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {}
    assert call.id.startswith("toolu_")
    if kind == "openai":
        assert sent(upstream)["tools"] == [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city", "parameters": WEATHER["input_schema"]}}]
        assert sent(upstream)["tool_choice"] == "auto"

    turn = [*asked, {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}]
    answer = client.messages.create(model="auto", max_tokens=64, messages=turn)
    assert answer.stop_reason == "end_turn" and answer.content[0].text == reply_of(kind, "weather in Paris?")
    body = sent(upstream)
    if kind == "anthropic":
        assert body["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]
    elif kind == "gemini":
        assert body["contents"][1:] == [
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}}]}]
    else:
        assert body["messages"][1:] == [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]


def test_stream_helper_and_final_message(messages_gateway, kind):
    gw = messages_gateway(kind)
    with sdk(gw).messages.stream(model="auto", max_tokens=50, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == reply_of(kind, "hello big world") == final.content[0].text
    assert final.stop_reason == "end_turn" and final.model == MODELS[kind]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 7)


def test_create_stream_raw_events(messages_gateway, kind):
    gw = messages_gateway(kind)
    events = list(sdk(gw).messages.create(model="auto", max_tokens=50, messages=HELLO, stream=True))
    types = [event.type for event in events]
    assert types[:2] == ["message_start", "content_block_start"] and types[-2:] == ["message_delta", "message_stop"]
    assert types.count("content_block_delta") == 3 and types.count("content_block_stop") == 1
    assert events[0].message.content == [] and events[0].message.usage.input_tokens > 0
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == reply_of(kind, "hello big world")
    assert events[-2].delta.stop_reason == "end_turn" and events[-2].usage.output_tokens == 7


def test_every_event_is_named_and_a_ping_comes_early(messages_gateway, kind):
    gw = messages_gateway(kind)
    events = sse_events(gw, {"model": "auto", "max_tokens": 50, "messages": HELLO})
    assert all(name == data["type"] for name, data in events)
    names = [name for name, _ in events]
    assert "ping" in names[:3] and names[0] == "message_start" and names[-1] == "message_stop"


def test_native_stream_is_relayed_event_for_event(messages_gateway, upstream):
    gw = messages_gateway("anthropic")
    events = sse_events(gw, {"model": "auto", "max_tokens": 50, "messages": HELLO, "top_k": 3})
    assert [name for name, _ in events] == [
        "message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert events[0][1]["message"]["id"].startswith("msg_fake_")  # the upstream's own message, not one rebuilt
    assert events[7][1] == {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": 7}}
    assert sent(upstream)["stream"] is True and sent(upstream)["top_k"] == 3


def test_streamed_tool_use(messages_gateway, kind):
    gw = messages_gateway(kind)
    with sdk(gw).messages.stream(model="auto", max_tokens=50, messages=HELLO, tools=[WEATHER]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in final.content] == [("tool_use", "get_weather", {})]
    assert final.content[0].id.startswith("toolu_")


def test_beta_messages_and_paths_without_v1(messages_gateway):
    """Claude Code calls ``/v1/messages?beta=true`` (the SDK's ``beta.messages``); ``/messages`` answers too."""
    gw = messages_gateway("openai")
    message = sdk(gw).beta.messages.create(model="auto", max_tokens=20, messages=HELLO,
                                           betas=["token-efficient-tools-2025-02-19"])
    assert message.content[0].text == reply_of("openai", "hello big world")
    bare = gw.post("/messages", json={"model": "auto", "max_tokens": 20, "messages": HELLO})
    assert bare.status_code == 200 and bare.json()["type"] == "message"
    assert bare.headers["x-modelbroker-provider"] == "openai/gpt-t"


@pytest.mark.parametrize("stop, reason", [("stop", "end_turn"), ("length", "max_tokens"),
                                          ("tool_calls", "tool_use"), ("content_filter", "refusal")])
def test_stop_reasons_from_an_openai_upstream(messages_gateway, upstream, stop, reason):
    body = {"id": "c1", "object": "chat.completion", "created": 0, "model": "gpt-t",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "partial"}, "finish_reason": stop}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11,
                      "prompt_tokens_details": {"cached_tokens": 4}}}
    upstream.set_behavior("gpt-t", {"kind": "status", "status": 200, "body": body})
    message = sdk(messages_gateway("openai")).messages.create(model="auto", max_tokens=5, messages=HELLO)
    assert message.stop_reason == reason and message.content[0].text == "partial"
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (5, 4, 2)


def test_the_sdk_type_checks_the_answer(messages_gateway, kind):
    """The whole answer parses strictly as the SDK's Message (no field missing or mistyped)."""
    gw = messages_gateway(kind)
    raw = gw.post("/v1/messages", json={"model": "auto", "max_tokens": 20, "messages": HELLO}).json()
    message = anthropic.types.Message.model_validate(raw, strict=True)
    assert message.usage.output_tokens == 7
