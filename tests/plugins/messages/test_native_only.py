"""What only Anthropic can do (a server tool, MCP servers, a file uploaded to it) goes only to an
Anthropic provider: other providers are skipped, not sent a request with the part left out."""

from __future__ import annotations

import anthropic
import pytest

from .conftest import sdk

HELLO = [{"role": "user", "content": "hello big world"}]
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
UPLOADED = [{"role": "user", "content": [
    {"type": "text", "text": "read this"},
    {"type": "document", "source": {"type": "file", "file_id": "file_011abc"}}]}]


@pytest.mark.parametrize("fields", [
    {"tools": [WEB_SEARCH]},
    {"mcp_servers": [{"type": "url", "url": "https://mcp.example/sse", "name": "example"}]},
    {"messages": UPLOADED},
], ids=["server-tool", "mcp-servers", "uploaded-file"])
def test_an_anthropic_only_request_passes_over_a_first_openai_provider(messages_gateway, provider, upstream,
                                                                        fields):
    gw = messages_gateway("openai", provider("claude-t", type="anthropic", priority=2))
    body = {"model": "auto", "max_tokens": 20, "messages": HELLO, **fields}
    response = gw.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-modelbroker-provider"] == "claude-t/claude-t"
    assert response.headers["x-modelbroker-skipped"] == "openai/gpt-t (lacks anthropic.messages)"
    assert [r["path"] for r in upstream.requests] == ["/v1/messages"]
    sent = upstream.requests[-1]["json"]
    assert {key: sent[key] for key in fields} == fields  # sent as the client wrote it


def test_without_an_anthropic_provider_it_is_refused_naming_the_part(messages_gateway, upstream):
    gw = messages_gateway("openai")
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(gw).messages.create(model="auto", max_tokens=20, messages=HELLO, tools=[WEB_SEARCH])
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert "tools[0] is Anthropic's server tool web_search_20250305" in error["message"]
    assert "openai/gpt-t cannot" in error["message"]
    assert upstream.requests == []


def test_an_uploaded_file_is_named_where_it_is(messages_gateway):
    gw = messages_gateway("openai")
    response = gw.post("/v1/messages", json={"model": "auto", "max_tokens": 20, "messages": UPLOADED})
    assert response.status_code == 400
    assert "messages[0].content[1] is a file uploaded to Anthropic" in response.json()["error"]["message"]


def test_a_plain_request_still_takes_the_first_provider(messages_gateway, provider, upstream):
    gw = messages_gateway("openai", provider("claude-t", type="anthropic", priority=2))
    response = gw.post("/v1/messages", json={"model": "auto", "max_tokens": 20, "messages": HELLO})
    assert response.headers["x-modelbroker-provider"] == "openai/gpt-t"
    assert "x-modelbroker-skipped" not in response.headers


def test_an_anthropic_provider_widened_to_every_chat_feature_still_takes_it(messages_gateway, provider, upstream):
    """With every provider able to carry every chat feature the gateway skips the feature check,
    but not for a request that needs a native format."""
    widened = {"n": True, "seed": True, "logprobs": True, "audio": True}
    gw = messages_gateway("openai", provider("claude-t", type="anthropic", priority=2, capabilities=widened))
    response = gw.post("/v1/messages", json={"model": "auto", "max_tokens": 20, "messages": HELLO,
                                             "tools": [WEB_SEARCH]})
    assert response.status_code == 200, response.text
    assert response.headers["x-modelbroker-provider"] == "claude-t/claude-t"
