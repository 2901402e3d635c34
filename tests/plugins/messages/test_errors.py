"""Errors on /v1/messages in Anthropic's shape, each raised by the SDK as the class its status names."""

from __future__ import annotations

import json

import anthropic
import pytest

from modelbroker import APIError
from modelbroker.plugins.messages.errors import error_body, error_type

from .conftest import MODELS, sdk

HELLO = [{"role": "user", "content": "hello big world"}]


def body(**fields) -> dict:
    return {"model": "auto", "max_tokens": 20, "messages": HELLO, **fields}


@pytest.mark.parametrize("fields, names", [
    ({"max_tokens": None}, "max_tokens: is required"),
    ({"max_tokens": "5"}, "max_tokens: must be an integer"),
    ({"messages": []}, "messages: list should have at least 1 item"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role: input should be 'user' or 'assistant'"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content: must be a string or a list of content blocks"),
    ({"messages": [{"role": "user", "content": ["hi"]}]}, "messages[0].content[0]: must be a content block"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]},
     "messages[0].content[0].source: must be"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]},
     "messages[0].content[0].tool_use_id: is required"),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": []}]}]},
     "messages[0].content[0].input: must be an object"),
    ({"system": 5}, "system: must be a string or a list of text blocks"),
    ({"system": [{"type": "image"}]}, "system[0]: must be a text block"),
    ({"temperature": 2}, "temperature: must be <= 1"),
    ({"tools": [{"name": "f"}]}, "tools[0].input_schema: is required for a tool of your own"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name: is required when tool_choice.type is 'tool'"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type: input should be"),
    ({"stream": "yes"}, "stream: must be true or false"),
])
def test_a_bad_body_is_a_400_naming_the_field(messages_gateway, upstream, fields, names):
    gw = messages_gateway("anthropic")
    sent = {k: v for k, v in body(**fields).items() if v is not None}
    answer = gw.post("/v1/messages", json=sent)
    assert answer.status_code == 400
    error = answer.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert names in error["error"]["message"], error
    assert not upstream.requests  # refused before any provider was asked


def test_a_body_that_is_not_json(messages_gateway):
    gw = messages_gateway("openai")
    answer = gw.post("/v1/messages", content=b"{nope", headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                        "message": "the body is not valid JSON", "code": "invalid_json"}}


def test_the_sdk_raises_bad_request_for_a_bad_block(messages_gateway):
    gw = messages_gateway("openai")
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(gw).messages.create(model="auto", max_tokens=10, messages=[
            {"role": "user", "content": [{"type": "image", "source": {"type": "url"}}]}])
    assert caught.value.type == "invalid_request_error"
    assert "messages[0].content[0].source" in caught.value.api_message


UPSTREAM_REFUSALS = {
    "anthropic": {"type": "error", "error": {"type": "invalid_request_error",
                                             "message": "messages.0.content: the upstream's own words"}},
    "gemini": {"error": {"code": 400, "message": "messages.0.content: the upstream's own words",
                         "status": "INVALID_ARGUMENT"}},
    "openai": {"error": {"message": "messages.0.content: the upstream's own words", "type": "invalid_request_error",
                         "param": "messages", "code": None}},
}


def test_every_provider_refusing_the_request_is_a_bad_request(messages_gateway, provider, upstream, kind):
    """The client is told what the upstream said, as it would be calling it directly."""
    upstream.set_behavior(MODELS[kind], {"kind": "status", "status": 400, "body": UPSTREAM_REFUSALS[kind]})
    upstream.set_behavior("backup", {"kind": "status", "status": 400, "body": UPSTREAM_REFUSALS["openai"]})
    gw = messages_gateway(kind, provider("backup", priority=2))
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(gw).messages.create(model="auto", max_tokens=10, messages=HELLO)
    assert caught.value.status_code == 400 and caught.value.type == "invalid_request_error"
    assert caught.value.api_message == "messages.0.content: the upstream's own words"
    assert len(caught.value.body["error"]["attempts"]) == 2


def test_all_providers_failing_is_a_502_api_error(messages_gateway, provider, upstream, kind):
    upstream.set_behavior(MODELS[kind], {"kind": "status", "status": 500})
    upstream.set_behavior("backup", {"kind": "status", "status": 503})
    gw = messages_gateway(kind, provider("backup", priority=2))
    with pytest.raises(anthropic.InternalServerError) as caught:
        sdk(gw).messages.create(model="auto", max_tokens=10, messages=HELLO)
    error = caught.value
    assert error.status_code == 502 and error.type == "api_error"
    assert error.api_message.startswith("all 2 provider attempts failed")
    assert [a["status"] for a in error.body["error"]["attempts"]] == [500, 503]
    assert error.response.headers["x-should-retry"] == "false"


def test_every_provider_rate_limiting_is_a_rate_limit_error(messages_gateway, upstream):
    upstream.set_behavior("claude-t", {"kind": "status", "status": 429, "headers": {"retry-after": "7"}})
    gw = messages_gateway("anthropic")
    with pytest.raises(anthropic.RateLimitError) as caught:
        sdk(gw).messages.create(model="auto", max_tokens=10, messages=HELLO)
    assert caught.value.type == "rate_limit_error" and caught.value.response.headers["retry-after"] == "7"


def test_an_unknown_model_is_not_found(messages_gateway):
    gw = messages_gateway("openai")
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk(gw).messages.create(model="claude-nonesuch", max_tokens=10, messages=HELLO)
    assert caught.value.type == "not_found_error" and "claude-nonesuch" in caught.value.api_message


def test_the_deadline_passing_is_a_gateway_timeout(messages_gateway, upstream):
    upstream.set_behavior("gpt-t", {"kind": "ok", "delay_s": 3})
    gw = messages_gateway("openai")
    with pytest.raises(anthropic.GatewayTimeoutError) as caught:
        sdk(gw).messages.create(model="auto", max_tokens=10, messages=HELLO,
                                extra_headers={"x-modelbroker-timeout": "0.3"})
    assert caught.value.status_code == 504 and caught.value.type == "timeout_error"


def test_a_body_too_large_is_request_too_large(messages_gateway):
    gw = messages_gateway("openai", settings={"max_body_bytes": 200})
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk(gw).messages.create(model="auto", max_tokens=10, messages=[{"role": "user", "content": "x" * 500}])
    assert caught.value.status_code == 413 and caught.value.type == "request_too_large"


def test_a_stream_cut_after_content_ends_with_an_error_event(messages_gateway, provider, upstream, kind):
    upstream.set_behavior(MODELS[kind], {"kind": "stream_cut", "cut_after": 2})
    gw = messages_gateway(kind, provider("backup", priority=2))
    with gw.client.stream("POST", "/v1/messages", json=body(stream=True)) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-2] == "event: error"
    error = json.loads(lines[-1][6:])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "the answer is incomplete" in error["error"]["message"]
    assert "event: message_stop" not in lines and sum(line == "event: content_block_delta" for line in lines) == 2

    with pytest.raises(anthropic.APIStatusError) as caught:
        with sdk(gw).messages.stream(model="auto", max_tokens=20, messages=HELLO) as stream:
            for _ in stream.text_stream:
                pass
    assert "the answer is incomplete" in str(caught.value)
    logged = [line for line in gw.log_lines() if line["attempt"]]
    assert [(line["error_kind"], line["surface"]) for line in logged] == [("partial", "messages")] * 2
    assert upstream.calls["backup"] == 0  # content had reached the client: no fallback


@pytest.mark.parametrize("status, kind", [
    (400, "invalid_request_error"), (401, "authentication_error"), (402, "billing_error"),
    (403, "permission_error"), (404, "not_found_error"), (413, "request_too_large"), (415, "invalid_request_error"),
    (422, "invalid_request_error"), (429, "rate_limit_error"), (500, "api_error"), (502, "api_error"),
    (503, "overloaded_error"), (504, "timeout_error"), (529, "overloaded_error"), (501, "api_error"),
])
def test_error_types_by_status(status, kind):
    assert error_type(status) == kind
    assert error_body(APIError(status, "why"))["error"]["type"] == kind


def test_an_upstreams_own_anthropic_type_is_kept():
    assert error_type(400, "billing_error") == "billing_error"
    assert error_type(400, "server_error") == "invalid_request_error"  # an OpenAI type is not Anthropic's
