"""Routing that knows what a provider can carry (core/_routing/features.py): a provider that
cannot carry a feature the request needs is skipped, not tried; when none can, 400 names the
feature and the providers; nothing is dropped silently."""

from __future__ import annotations

import pytest

from modelbroker import ChatRequest, ConfigError
from modelbroker._config.loading import parse_config
from modelbroker._routing.features import provider_features, request_features

SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
IMAGE = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("fields, messages, needs", [
    ({}, [{"role": "user", "content": "hi"}], set()),
    ({"tools": TOOLS}, None, {"tools"}),
    ({"tools": TOOLS, "parallel_tool_calls": True}, None, {"tools", "parallel_tool_calls"}),
    ({"tools": [], "parallel_tool_calls": True}, None, set()),
    ({"response_format": {"type": "json_object"}}, None, {"json_object"}),
    ({"response_format": SCHEMA}, None, {"json_schema"}),
    ({"response_format": {"type": "text"}}, None, set()),
    ({"n": 3, "seed": 7, "logprobs": True}, None, {"n", "seed", "logprobs"}),
    ({"n": 1, "seed": None, "logprobs": False}, None, set()),
    ({"modalities": ["text", "audio"]}, None, {"audio"}),
    ({}, IMAGE, {"images"}),
])
def test_a_requests_features_are_read_from_its_fields_and_messages(fields, messages, needs):
    request = ChatRequest(messages=messages or [{"role": "user", "content": "hi"}], extra=fields)
    assert request_features(request) == needs


def test_a_providers_capabilities_narrow_or_widen_its_adapters():
    assert provider_features(None, {}) >= {"tools", "images", "n"}
    assert "tools" not in provider_features(None, {"tools": False})
    assert provider_features({"tools"}, {"images": True}) == {"tools", "images"}


def test_an_unknown_capability_is_refused_naming_the_field():
    text = ("providers:\n  - {name: a, endpoint: 'http://127.0.0.1:9/v1', model: a, cost_per_1k_tokens: 0,\n"
            "     capabilities: {vison: true}}\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    assert "providers[0].capabilities" in str(caught.value)
    assert "unknown feature 'vison'" in str(caught.value)


@pytest.fixture
def gw(gateway, provider):
    return gateway({"reliability": {"retries": 0}, "providers": [
        provider("text-only", priority=1, capabilities={"images": False, "tools": False}),
        provider("vision", priority=2),
    ]})


def test_a_provider_that_cannot_carry_the_request_is_skipped_not_tried(gw, upstream):
    answer = gw.chat(IMAGE)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-modelbroker-provider"] == "vision/vision"
    assert answer.headers["x-modelbroker-attempts"] == "1"
    assert answer.headers["x-modelbroker-skipped"] == "text-only/text-only (lacks images)"
    assert dict(upstream.calls) == {"vision": 1}
    plain = gw.chat("no picture here")
    assert plain.headers["x-modelbroker-provider"] == "text-only/text-only"
    assert "x-modelbroker-skipped" not in plain.headers
    health = {p["id"]: p for p in gw.get("/health").json()["providers"]}
    assert health["text-only/text-only"]["state"] == "healthy"  # a skip is no failure
    lines = gw.log_lines()
    assert [line["provider_id"] for line in lines] == ["vision/vision", "text-only/text-only"]


def test_when_no_provider_can_carry_a_feature_the_answer_names_it(gateway, provider, upstream):
    import openai

    gw = gateway({"providers": [provider("a", capabilities={"tools": False}),
                                provider("b", capabilities={"tools": False})]})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}], tools=TOOLS)
    error = caught.value.body
    assert error["code"] == "unsupported_feature" and error["param"] == "tools"
    assert "a/a, b/b" in error["message"] and "tools" in error["message"]
    assert error["skipped"] == {"a/a": ["tools"], "b/b": ["tools"]}
    assert not upstream.calls
    rejected = gw.log_lines()
    assert rejected == []  # app.log holds attempts; the ledger and on_rejected hold refusals
