"""``POST /v1/messages/count_tokens``: an estimate of a request's input tokens, errors in Anthropic's shape."""

from __future__ import annotations

import anthropic
import pytest

from modelbroker import estimate_tokens
from modelbroker.plugins.messages.count_tokens import IMAGE_TOKENS, input_tokens

from .conftest import sdk

HELLO = [{"role": "user", "content": "hello big world"}]


def test_count_tokens_through_the_sdk(messages_gateway, upstream):
    gw = messages_gateway("anthropic")
    counted = sdk(gw).messages.count_tokens(model="auto", system="be brief", messages=HELLO)
    assert counted.input_tokens == estimate_tokens("be brief\nhello big world")
    assert not upstream.requests  # counted by the gateway, not asked of a provider
    bare = gw.post("/messages/count_tokens", json={"model": "auto", "messages": HELLO})
    assert bare.status_code == 200 and bare.json() == {"input_tokens": estimate_tokens("hello big world")}


def test_everything_the_model_reads_is_counted():
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    data = {"model": "auto", "tools": tools, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "weather?"}, image]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]}]}
    text = "\n".join(["weather?", "get_weather", '{"city":"Paris"}', "sunny",
                      '[{"name":"get_weather","input_schema":{"type":"object"}}]'])
    assert input_tokens(data) == estimate_tokens(text) + IMAGE_TOKENS


def test_a_bad_body_is_an_anthropic_bad_request(messages_gateway):
    gw = messages_gateway("openai")
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(gw).messages.count_tokens(model="auto", messages=[{"role": "user", "content": [{"type": "text"}]}])
    assert caught.value.type == "invalid_request_error"
    assert caught.value.api_message.startswith("messages[0].content[0]: must be a text block")
    missing = gw.post("/v1/messages/count_tokens", json={"messages": HELLO})
    assert missing.status_code == 400
    assert missing.json()["type"] == "error" and missing.json()["error"]["message"] == "model: is required"


def test_it_is_in_the_openapi_description(messages_gateway):
    paths = messages_gateway("openai").get("/openapi.json").json()["paths"]
    assert "post" in paths["/v1/messages/count_tokens"] and "post" in paths["/v1/messages"]
    assert "/messages/count_tokens" not in paths
