"""A client key in ``x-api-key`` (the Anthropic SDKs, Claude Code's ANTHROPIC_API_KEY) works as one in
``Authorization: Bearer`` (the OpenAI SDKs, Claude Code's ANTHROPIC_AUTH_TOKEN), on every route."""

from __future__ import annotations

import anthropic
import pytest

from modelbroker.plugins.keys.keygen import presented_key

from .conftest import add_key, keys_config, unique

HELLO = [{"role": "user", "content": "hi"}]
TIMEOUT = 10.0


def claude(gw, api_key: str | None = None, **options) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=api_key, max_retries=0, timeout=TIMEOUT, **options)


def test_presented_key():
    assert presented_key("Bearer mb-a", None) == "mb-a"
    assert presented_key(None, " mb-b ") == "mb-b"
    assert presented_key("Bearer mb-a", "mb-b") == "mb-a"  # both sent: the Authorization header's
    assert presented_key("Basic xyz", "mb-b") == "mb-b"
    assert presented_key(None, "  ") is None and presented_key(None, None) is None


def test_x_api_key_and_bearer_both_authenticate(gateway, provider, upstream, db_url):
    name = unique("claude-coder")
    key = add_key(db_url, name)
    gw = gateway(keys_config(provider("a")), database_url=db_url)

    message = claude(gw, api_key=key).messages.create(model="auto", max_tokens=10, messages=HELLO)  # x-api-key
    assert message.content[0].text == "Fake reply from a: hi"
    by_token = claude(gw, auth_token=key).messages.create(model="auto", max_tokens=10, messages=HELLO)  # Bearer
    assert by_token.content[0].text == "Fake reply from a: hi"
    assert claude(gw, api_key=key).messages.count_tokens(model="auto", messages=HELLO).input_tokens >= 1
    assert gw.get("/v1/models", headers={"x-api-key": key}).status_code == 200
    assert "x-api-key" not in upstream.requests[-1]["headers"]  # the client's key never goes upstream

    gw.stop()
    assert key not in gw.log_file.read_text(encoding="utf-8")


def test_a_wrong_or_missing_key_is_an_authentication_error(gateway, provider, db_url):
    key = add_key(db_url, unique("claude-coder"))
    gw = gateway(keys_config(provider("a")), database_url=db_url)
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    with pytest.raises(anthropic.AuthenticationError) as caught:
        claude(gw, api_key=wrong).messages.create(model="auto", max_tokens=10, messages=HELLO)
    assert caught.value.type == "authentication_error" and caught.value.body["error"]["code"] == "invalid_api_key"
    assert wrong not in caught.value.response.text

    with pytest.raises(anthropic.AuthenticationError):
        claude(gw, api_key=wrong).messages.count_tokens(model="auto", messages=HELLO)
    missing = gw.post("/v1/messages", json={"model": "auto", "max_tokens": 10, "messages": HELLO})
    assert missing.status_code == 401
    error = missing.json()["error"]
    assert missing.json()["type"] == "error" and error["code"] == "missing_api_key"
    assert "'Authorization: Bearer <key>' or 'x-api-key: <key>'" in error["message"]
