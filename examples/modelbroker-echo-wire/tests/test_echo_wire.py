"""Adapter ``type: echowire``: through a real gateway in front of the fake EchoWire server."""

from __future__ import annotations

import asyncio
import json

import httpx
import modelbroker_echo_wire as echo_wire
import pytest
from fake_echowire import TEST_KEY as KEY

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.types import ChatRequest, ErrorKind, ProviderError
from modelbroker.testing import GatewayServer, free_port

HELLO = [{"role": "user", "content": "Hello there"}]


def events(response: httpx.Response) -> list:
    """The ``data:`` payloads of a server-sent event stream, JSON-decoded where they are JSON."""
    found = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            found.append(data if data == "[DONE]" else json.loads(data))
    return found


# --- the adapter on its own ----------------------------------------------------------------


def test_declines_other_types():
    openai = ProviderConfig(name="o", endpoint="http://x", model="m", cost_per_1k_tokens=0)
    assert echo_wire.call_provider(provider=openai, request=ChatRequest(messages=HELLO), client=None) is None


def test_request_body_joins_the_messages_and_takes_max_out_from_the_request_or_options():
    provider = ProviderConfig(name="e", type="echowire", endpoint="http://x", model="echo-1",
                              cost_per_1k_tokens=0, options={"max_out": 64})
    request = ChatRequest(messages=[{"role": "system", "content": "Be brief."}, *HELLO])
    assert echo_wire.request_body(provider, request) == {
        "input": "Be brief.\nHello there", "model": "echo-1", "max_out": 64,
    }
    request.max_tokens = 3
    assert echo_wire.request_body(provider, request)["max_out"] == 3


def test_reads_output_and_usage(echowire, echo_provider):
    provider = ProviderConfig(**echo_provider())
    request = ChatRequest(messages=[{"role": "user", "content": "one two three four"}], max_tokens=3)

    async def call():
        async with httpx.AsyncClient() as client:
            return await echo_wire.call_provider(provider=provider, request=request, client=client)

    result = asyncio.run(call())
    assert result.text == "echo: one two"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (4, 3, 7)
    headers, body = echowire.requests[0]
    assert headers["x-echowire-key"] == KEY
    assert body == {"input": "one two three four", "model": "echo-1", "max_out": 3}


# --- through a gateway ---------------------------------------------------------------------


def test_generate_and_chat_completions(write_config, echo_provider, echowire):
    with GatewayServer(write_config(echo_provider())) as gw:
        generated = httpx.post(gw.url + "/generate", json={"prompt": "Hello there"}, timeout=10)
        chat = httpx.post(gw.url + "/v1/chat/completions", json={"messages": HELLO}, timeout=10)
    assert generated.status_code == 200, generated.text
    answer = generated.json()
    assert (answer["response"], answer["modelUsed"], answer["tokens"]) == ("echo: Hello there", "echo-1", 5)
    assert answer["cost"] == pytest.approx(5 * 0.5 / 1000)
    assert generated.headers["x-modelbroker-provider"] == "echo/echo-1"
    assert chat.status_code == 200, chat.text
    body = chat.json()
    assert body["object"] == "chat.completion" and body["model"] == "echo-1"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "echo: Hello there"}
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert echowire.calls["echo-1"] == 2


def test_a_stream_is_sent_as_one_chunk(write_config, echo_provider):
    with GatewayServer(write_config(echo_provider())) as gw:
        generated = httpx.post(gw.url + "/generate", json={"prompt": "Hello there", "stream": True}, timeout=10)
        chat = httpx.post(gw.url + "/v1/chat/completions", timeout=10,
                          json={"messages": HELLO, "stream": True, "stream_options": {"include_usage": True}})
    assert generated.headers["content-type"].startswith("text/event-stream")
    delta, done = events(generated)
    assert delta == {"delta": "echo: Hello there"}
    assert done["done"] is True and done["tokens"] == 5 and done["provider"] == "echo/echo-1"
    chunk, usage, end = events(chat)
    assert chunk["choices"][0]["delta"]["content"] == "echo: Hello there"
    assert usage["usage"]["total_tokens"] == 5 and end == "[DONE]"


def test_a_wrong_key_is_not_retried_and_never_shown(write_config, echo_provider, echowire):
    wrong = "ew-wrong-key-fedcba9876543210"
    with GatewayServer(write_config(echo_provider(api_key=wrong), reliability={"retries": 2})) as gw:
        answer = httpx.post(gw.url + "/generate", json={"prompt": "hi"}, timeout=10)
    assert answer.status_code == 502
    [attempt] = answer.json()["error"]["attempts"]
    assert (attempt["error"], attempt["status"]) == ("status", 401)
    assert "unknown key" in attempt["message"] and wrong not in answer.text


def test_a_503_is_retried_then_falls_back(write_config, echo_provider, echowire, openai_upstream):
    echowire.fail("echo-1", 503)
    backup = {"name": "backup", "endpoint": openai_upstream.chat_url, "model": "backup-model",
              "priority": 1, "cost_per_1k_tokens": 0}
    config = write_config(echo_provider(), backup, reliability={"retries": 1, "backoff_initial_s": 0.01})
    with GatewayServer(config) as gw:
        answer = httpx.post(gw.url + "/generate", json={"prompt": "hi"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "backup/backup-model" and answer.json()["attempts"] == 3
    assert echowire.calls["echo-1"] == 2


@pytest.mark.parametrize("case, kind", [("garbled", "malformed"), ("closed_port", "connect")])
def test_failures_map_to_provider_errors(write_config, echo_provider, echowire, case, kind):
    if case == "garbled":
        echowire.garble("echo-1")
        provider = echo_provider()
    else:
        provider = echo_provider(endpoint=f"http://127.0.0.1:{free_port()}/v1/echo")
    with GatewayServer(write_config(provider)) as gw:
        answer = httpx.post(gw.url + "/generate", json={"prompt": "hi"}, timeout=10)
    assert answer.status_code == 502
    assert answer.json()["error"]["attempts"][0]["error"] == kind


def test_a_failed_call_raises_provider_error(echowire, echo_provider):
    echowire.fail("echo-1", 429)
    provider = ProviderConfig(**echo_provider())

    async def call():
        async with httpx.AsyncClient() as client:
            return await echo_wire.complete(provider, ChatRequest(messages=HELLO), client)

    with pytest.raises(ProviderError) as caught:
        asyncio.run(call())
    assert (caught.value.kind, caught.value.status, caught.value.code) == (ErrorKind.STATUS, 429, "upstream_error")
    assert caught.value.message == "upstream answered 429: the model is overloaded"
