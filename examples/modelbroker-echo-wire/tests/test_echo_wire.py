"""Adapter ``type: echowire``: through a real gateway in front of the fake EchoWire server."""

from __future__ import annotations

import asyncio
import json

import httpx
import modelbroker_echo_wire as echo_wire
import pytest
from fake_echowire import TEST_KEY as KEY

from modelbroker import ChatRequest, ErrorKind, ProviderConfig, ProviderError, UpstreamHTTP
from modelbroker.testing import registered

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


def test_registers_its_type():
    assert registered(echo_wire, "register_adapters") == {"echowire": echo_wire.EchoWire}


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
        async with UpstreamHTTP() as http:
            return await echo_wire.EchoWire().call_provider(provider, request, http)

    result = asyncio.run(call())
    assert result.text == "echo: one two"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (4, 3, 7)
    headers, body = echowire.requests[0]
    assert headers["x-echowire-key"] == KEY
    assert body == {"input": "one two three four", "model": "echo-1", "max_out": 3}


# --- through a gateway ---------------------------------------------------------------------


def test_generate_and_chat_completions(gateway, config, echo_provider, echowire):
    gw = gateway(config(echo_provider()))
    generated = gw.generate({"prompt": "Hello there"})
    chat = gw.chat(HELLO)
    assert generated.status_code == 200, generated.text
    answer = generated.json()
    assert (answer["response"], answer["modelUsed"], answer["tokens"]) == ("echo: Hello there", "echo-1", 5)
    assert answer["cost"] == pytest.approx(5 * 0.5 / 1000)
    assert generated.headers["x-modelbroker-provider"] == "echo/echo-1"
    assert chat.status_code == 200, chat.text
    body = chat.json()
    assert body["object"] == "chat.completion" and body["model"] == "echo-1"
    assert body["choices"][0]["message"]["content"] == "echo: Hello there"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert echowire.calls["echo-1"] == 2


def test_a_stream_is_relayed_piece_by_piece(gateway, config, echo_provider, echowire):
    gw = gateway(config(echo_provider()))
    generated = gw.generate({"prompt": "Hello there", "stream": True})
    chat = gw.chat(HELLO, stream=True, stream_options={"include_usage": True})
    assert generated.headers["content-type"].startswith("text/event-stream")
    *deltas, done = events(generated)
    assert deltas == [{"delta": "echo:"}, {"delta": " Hello"}, {"delta": " there"}]
    assert done["done"] is True and done["tokens"] == 5 and done["provider"] == "echo/echo-1"
    *chunks, finish, usage, end = events(chat)
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "echo: Hello there"
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5} and end == "[DONE]"
    assert echowire.requests[0][1]["stream"] is True


def test_a_stream_cut_before_any_content_falls_back(gateway, config, echo_provider, echowire, provider):
    echowire.cut("echo-1", after=0)
    gw = gateway(config(echo_provider(), provider("backup", "backup-model", priority=1)))
    *_, done = events(gw.generate({"prompt": "hi", "stream": True}))
    assert done["provider"] == "backup/backup-model" and done["attempts"] == 2


@pytest.mark.parametrize("broken", ["cut", "error event"])
def test_a_stream_that_breaks_after_content_ends_with_an_error_event(gateway, config, echo_provider, echowire,
                                                                     broken):
    if broken == "cut":
        echowire.cut("echo-1", after=1)
    else:
        echowire.break_stream("echo-1", after=1)
    gw = gateway(config(echo_provider()))
    first, failed = events(gw.chat(HELLO, stream=True))
    assert first["choices"][0]["delta"]["content"] == "echo:"
    assert failed["error"]["code"] == "stream_interrupted"
    (line,) = gw.log_lines()
    assert (line["success"], line["error_kind"]) == (False, "partial")
    expected = ("the upstream closed the connection" if broken == "cut"
                else "the upstream sent an error: the model stopped half-way")
    assert expected in line["error"]


def test_a_wrong_key_is_not_retried_and_never_shown(gateway, config, echo_provider, echowire):
    wrong = "ew-wrong-key-fedcba9876543210"
    gw = gateway(config(echo_provider(api_key=wrong), reliability={"retries": 2}))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 502
    [attempt] = answer.json()["error"]["attempts"]
    assert (attempt["error"], attempt["status"]) == ("status", 401)
    assert "unknown key" in attempt["message"] and wrong not in answer.text


def test_a_503_is_retried_then_falls_back(gateway, config, echo_provider, echowire, provider):
    echowire.fail("echo-1", 503)
    gw = gateway(config(echo_provider(), provider("backup", "backup-model", priority=1, cost_per_1k_tokens=0),
                        reliability={"retries": 1, "backoff_initial_s": 0.01}))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "backup/backup-model" and answer.json()["attempts"] == 3
    assert echowire.calls["echo-1"] == 2


@pytest.mark.parametrize("case, kind", [("garbled", "malformed"), ("closed_port", "connect")])
def test_failures_map_to_provider_errors(gateway, config, echo_provider, echowire, free_port, case, kind):
    if case == "garbled":
        echowire.garble("echo-1")
        entry = echo_provider()
    else:
        entry = echo_provider(endpoint=f"http://127.0.0.1:{free_port}/v1/echo")
    answer = gateway(config(entry)).generate({"prompt": "hi"})
    assert answer.status_code == 502
    assert answer.json()["error"]["attempts"][0]["error"] == kind


def test_a_failed_call_raises_provider_error(echowire, echo_provider):
    echowire.fail("echo-1", 429)
    provider = ProviderConfig(**echo_provider())

    async def call():
        async with UpstreamHTTP() as http:
            return await echo_wire.complete(provider, ChatRequest(messages=HELLO), http)

    with pytest.raises(ProviderError) as caught:
        asyncio.run(call())
    assert (caught.value.kind, caught.value.status, caught.value.code) == (ErrorKind.STATUS, 429, "upstream_error")
    assert caught.value.message == "upstream answered 429: the model is overloaded"
