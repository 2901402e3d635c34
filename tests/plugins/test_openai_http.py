"""plugins/openai_http/: the wire format of an OpenAI-compatible upstream.

Pure functions (parse_chunk, parse_usage, stream_body, request_body, parse_completion)
are tested with plain dicts and strings, because the fake upstream never reports
cached or reasoning tokens. ``open_stream``, ``complete`` and ``embed`` (embeddings, with
``embeddings.py``) are then run against the real fake upstream on loopback with the gateway's
own client (``modelbroker._upstream.client.UpstreamHTTP``), with every failure it can make.
"""

from __future__ import annotations

import json

import orjson
import pytest

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.types import ChatRequest, ErrorKind, ProviderError, Usage
from modelbroker._upstream.client import UpstreamHTTP
from modelbroker.plugins.openai_http import (
    complete,
    embed,
    embeddings,
    open_stream,
    parse_chunk,
    parse_completion,
    parse_usage,
    request_body,
    request_headers,
    stream_body,
)

SECRET = "sk-openai-http-test-SECRET-0123456789abcdef"


def chunk_json(delta: dict, finish_reason: str | None = None, **top) -> str:
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **top,
    })


# --- parse_chunk -----------------------------------------------------------------------


def test_parse_chunk_content_delta():
    chunk = parse_chunk(chunk_json({"content": "Hello"}))
    assert chunk.text == "Hello"
    assert chunk.has_content is True
    assert chunk.finish_reason is None
    assert chunk.usage is None
    assert chunk.model == "m"
    assert chunk.raw["choices"][0]["delta"] == {"content": "Hello"}


def test_parse_chunk_role_only_has_no_content():
    for delta in ({"role": "assistant"}, {"role": "assistant", "content": ""}, {"role": "assistant", "content": None}):
        chunk = parse_chunk(chunk_json(delta))
        assert chunk.has_content is False, delta
        assert chunk.text == ""


def test_parse_chunk_tool_call_delta_has_content_but_no_text():
    delta = {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                             "function": {"name": "get_weather", "arguments": ""}}]}
    chunk = parse_chunk(chunk_json(delta))
    assert chunk.has_content is True
    assert chunk.text == ""


@pytest.mark.parametrize("delta", [
    {"function_call": {"name": "f", "arguments": "{}"}},
    {"refusal": "I can't help with that."},
], ids=["function_call", "refusal"])
def test_parse_chunk_legacy_function_call_and_refusal_have_content(delta):
    assert parse_chunk(chunk_json(delta)).has_content is True


def test_parse_chunk_finish_reason_and_empty_delta():
    chunk = parse_chunk(chunk_json({}, "stop"))
    assert chunk.finish_reason == "stop"
    assert chunk.has_content is False


def test_parse_chunk_usage_chunk_without_choices():
    data = json.dumps({"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
                                 "prompt_tokens_details": {"cached_tokens": 3}}})
    chunk = parse_chunk(data)
    assert chunk.has_content is False
    assert chunk.usage == Usage(5, 7, 12, cached_tokens=3)


def test_parse_chunk_multiple_choices_concatenate_text():
    data = json.dumps({"choices": [{"index": 0, "delta": {"content": "a"}},
                                   {"index": 1, "delta": {"content": "b"}, "finish_reason": "length"}]})
    chunk = parse_chunk(data)
    assert chunk.text == "ab" and chunk.has_content and chunk.finish_reason == "length"


def test_parse_chunk_error_event_raises_error_event():
    data = json.dumps({"error": {"message": "overloaded, try later", "type": "server_error"}})
    with pytest.raises(ProviderError) as caught:
        parse_chunk(data)
    assert caught.value.kind is ErrorKind.ERROR_EVENT
    assert "overloaded, try later" in caught.value.message


def test_parse_chunk_error_event_as_string_and_redacted():
    with pytest.raises(ProviderError) as caught:
        parse_chunk(json.dumps({"error": f"bad key {SECRET}"}), SECRET)
    assert caught.value.kind is ErrorKind.ERROR_EVENT
    assert SECRET not in caught.value.message and SECRET[:12] not in caught.value.message
    assert "***" in caught.value.message


@pytest.mark.parametrize("data", ["{not json", "data: {}", "", "{\"choices\": [tru"])
def test_parse_chunk_non_json_raises_malformed(data):
    with pytest.raises(ProviderError) as caught:
        parse_chunk(data)
    assert caught.value.kind is ErrorKind.MALFORMED


@pytest.mark.parametrize("data", ["[1, 2]", "\"text\"", "42", "null"])
def test_parse_chunk_json_that_is_not_an_object_raises_malformed(data):
    with pytest.raises(ProviderError) as caught:
        parse_chunk(data)
    assert caught.value.kind is ErrorKind.MALFORMED


def test_parse_chunk_malformed_snippet_never_holds_the_key():
    with pytest.raises(ProviderError) as caught:
        parse_chunk(f"oops {SECRET} oops", SECRET)
    assert SECRET not in caught.value.message and SECRET[:12] not in caught.value.message


# --- parse_usage ------------------------------------------------------------------------


def test_parse_usage_plain():
    assert parse_usage({"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}) == Usage(10, 4, 14)


def test_parse_usage_keeps_cached_and_reasoning_tokens_apart():
    usage = parse_usage({
        "prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 256, "accepted_prediction_tokens": 0},
    })
    assert usage.prompt_tokens == 1200
    assert usage.completion_tokens == 300
    assert usage.total_tokens == 1500
    assert usage.cached_tokens == 1024
    assert usage.reasoning_tokens == 256
    assert usage.estimated is False


def test_parse_usage_without_details_leaves_them_none():
    usage = parse_usage({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                         "prompt_tokens_details": None, "completion_tokens_details": {}})
    assert usage.cached_tokens is None
    assert usage.reasoning_tokens is None


def test_parse_usage_zero_cached_tokens_is_kept_as_zero():
    usage = parse_usage({"prompt_tokens": 1, "completion_tokens": 1,
                         "prompt_tokens_details": {"cached_tokens": 0},
                         "completion_tokens_details": {"reasoning_tokens": 0}})
    assert usage.cached_tokens == 0 and usage.reasoning_tokens == 0


def test_parse_usage_total_computed_when_missing():
    assert parse_usage({"prompt_tokens": 3, "completion_tokens": 4}).total_tokens == 7


@pytest.mark.parametrize("value", [None, "12", [1], 5])
def test_parse_usage_not_a_dict_is_zero(value):
    assert parse_usage(value) == Usage()


def test_parse_usage_ignores_negative_or_non_integer_counts():
    usage = parse_usage({"prompt_tokens": -1, "completion_tokens": "7", "total_tokens": None})
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (0, 0, 0)


# --- request_body / stream_body -----------------------------------------------------------


def chat_request(**fields) -> ChatRequest:
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return ChatRequest(**fields)


def test_request_body_model_is_always_the_providers():
    request = chat_request(model="auto", extra={"model": "client-model", "seed": 7})
    body = request_body("provider-model", request)
    assert body["model"] == "provider-model"
    assert body["messages"] == request.messages
    assert body["seed"] == 7


def test_request_body_passes_extra_fields_through_untouched():
    extra = {
        "seed": 42, "stop": ["\n\n", "END"], "top_p": 0.9, "user": "u-1",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "max_completion_tokens": 64, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "logit_bias": {"50256": -100}, "x_vendor_option": {"nested": [1, {"a": None}]},
    }
    body = request_body("m", chat_request(extra=json.loads(json.dumps(extra))))
    for key, value in extra.items():
        assert body[key] == value, key


def test_request_body_owned_fields_only_when_set():
    body = request_body("m", chat_request())
    assert set(body) == {"model", "messages"}
    body = request_body("m", chat_request(max_tokens=5, temperature=0.0))
    assert body["max_tokens"] == 5
    assert body["temperature"] == 0.0


def test_request_body_does_not_change_the_request():
    request = chat_request(extra={"seed": 1})
    request_body("m", request)
    assert request.extra == {"seed": 1}


def test_stream_body_forces_stream_and_include_usage():
    body = stream_body("m", chat_request(stream=True))
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "m"


def test_stream_body_keeps_the_clients_stream_options():
    options = {"include_usage": False, "include_obfuscation": False}
    request = chat_request(stream=True, extra={"stream_options": options})
    body = stream_body("m", request)
    assert body["stream_options"] == {"include_usage": True, "include_obfuscation": False}
    # the client's own dict is not modified (the gateway still needs to know what it asked)
    assert request.extra["stream_options"] == {"include_usage": False, "include_obfuscation": False}


def test_stream_body_with_invalid_stream_options_still_asks_usage():
    body = stream_body("m", chat_request(stream=True, extra={"stream_options": None}))
    assert body["stream_options"] == {"include_usage": True}


def test_request_headers():
    assert request_headers(None) == {"content-type": "application/json"}
    assert request_headers("k")["authorization"] == "Bearer k"


# --- parse_completion -------------------------------------------------------------------------


def test_parse_completion_reads_text_model_usage_and_keeps_raw():
    raw = {"id": "x", "object": "chat.completion", "model": "upstream-model",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "hey"}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3,
                     "completion_tokens_details": {"reasoning_tokens": 1}}}
    completion = parse_completion(orjson.dumps(raw), "fallback")
    assert completion.text == "hey"
    assert completion.model == "upstream-model"
    assert completion.usage == Usage(2, 1, 3, reasoning_tokens=1)
    assert completion.raw == raw


def test_parse_completion_tool_call_answer_has_empty_text():
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    raw = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
    completion = parse_completion(orjson.dumps(raw), "fallback")
    assert completion.text == ""
    assert completion.model == "fallback"


@pytest.mark.parametrize("content", [b'{"choices": [tru', b"{}", b'{"choices": []}', b"[]", b'{"choices": [{}]}'])
def test_parse_completion_not_a_completion_raises_malformed(content):
    with pytest.raises(ProviderError) as caught:
        parse_completion(content, "m")
    assert caught.value.kind is ErrorKind.MALFORMED


# --- against the real fake upstream -----------------------------------------------------------


def provider_config(upstream, model: str = "m", **fields) -> ProviderConfig:
    return ProviderConfig(name="p", endpoint=upstream.chat_url, model=model, cost_per_1k_tokens=0.0,
                          api_key=SECRET, **fields)


async def collect(chunks) -> list:
    return [chunk async for chunk in chunks]


async def test_open_stream_yields_chunks_with_usage_and_sends_the_key(upstream):
    request = chat_request(stream=True, messages=[{"role": "user", "content": "one two three"}])
    async with UpstreamHTTP() as client:
        chunks = await collect(await open_stream(provider_config(upstream), request, client))
    assert chunks[0].has_content is False  # the role chunk
    assert "".join(c.text for c in chunks) == "Fake reply from m: one two three"
    assert [c.usage for c in chunks if c.usage] == [Usage(3, 7, 10)]
    sent = upstream.requests[-1]
    assert sent["headers"]["authorization"] == f"Bearer {SECRET}"
    assert sent["json"]["stream"] is True and sent["json"]["stream_options"] == {"include_usage": True}


async def test_open_stream_status_error_raises_before_any_chunk(upstream):
    upstream.set_behavior("m", {"kind": "status", "status": 503})
    async with UpstreamHTTP() as client:
        with pytest.raises(ProviderError) as caught:
            await open_stream(provider_config(upstream), chat_request(stream=True), client)
    assert caught.value.kind is ErrorKind.STATUS and caught.value.status == 503


async def test_open_stream_cut_raises_connection_after_the_chunks_sent(upstream):
    upstream.set_behavior("m", {"kind": "stream_cut", "cut_after": 2, "chunks": 4})
    got = []
    async with UpstreamHTTP() as client:
        with pytest.raises(ProviderError) as caught:
            async for chunk in await open_stream(provider_config(upstream), chat_request(stream=True), client):
                got.append(chunk)
    assert caught.value.kind is ErrorKind.CONNECTION
    assert sum(1 for c in got if c.has_content) == 2


async def test_open_stream_error_event_raises_error_event(upstream):
    upstream.set_behavior("m", {"kind": "stream_error_event", "cut_after": 1})
    async with UpstreamHTTP() as client:
        with pytest.raises(ProviderError) as caught:
            await collect(await open_stream(provider_config(upstream), chat_request(stream=True), client))
    assert caught.value.kind is ErrorKind.ERROR_EVENT
    assert "fake mid-stream error" in caught.value.message


async def test_open_stream_stall_raises_timeout(upstream):
    upstream.set_behavior("m", {"kind": "stream_stall", "cut_after": 1})
    async with UpstreamHTTP() as client:
        with pytest.raises(ProviderError) as caught:
            chunks = await open_stream(provider_config(upstream, timeout_s=0.3), chat_request(stream=True), client)
            await collect(chunks)
    assert caught.value.kind is ErrorKind.TIMEOUT


@pytest.mark.parametrize("kind", ["empty_choices", "malformed"])
async def test_open_stream_json_answer_that_is_no_completion_is_malformed(upstream, kind):
    """An upstream answering a stream request with application/json is read whole; a bad one is malformed."""
    upstream.set_behavior("m", {"kind": kind})
    async with UpstreamHTTP() as client:
        with pytest.raises(ProviderError) as caught:
            await collect(await open_stream(provider_config(upstream), chat_request(stream=True), client))
    assert caught.value.kind is ErrorKind.MALFORMED


async def test_complete_passes_extra_and_reads_usage(upstream):
    request = chat_request(extra={"seed": 3, "foo": {"bar": 1}}, max_tokens=9)
    async with UpstreamHTTP() as client:
        completion = await complete(provider_config(upstream), request, client)
    assert completion.text.startswith("Fake reply from m")
    assert completion.usage.estimated is False and completion.usage.total_tokens > 0
    body = upstream.requests[-1]["json"]
    assert body["seed"] == 3 and body["foo"] == {"bar": 1} and body["max_tokens"] == 9
    assert "stream" not in body


# --- embeddings (embeddings.py, and embed() against the fake upstream) ---------------------------------


def embeddings_request(value="hello world", **fields) -> ChatRequest:
    return ChatRequest(messages=[], kind="embeddings", extra={"input": value, **fields})


def embedder_config(upstream, model: str = "e", **fields) -> ProviderConfig:
    return ProviderConfig(name="e", kind="embeddings", endpoint=upstream.url + "/v1/embeddings", model=model,
                          cost_per_1k_tokens=0.0, api_key=SECRET, **fields)


@pytest.mark.parametrize("value, count", [("one", 1), ([1, 2, 3], 1), (["a", "b"], 2), ([[1], [2], [3]], 3)])
def test_input_count(value, count):
    assert embeddings.input_count(value) == count


def test_embeddings_body_is_the_clients_with_the_providers_model_and_forced_format():
    request = embeddings_request(["a"], dimensions=8, encoding_format="base64", user="u")
    assert embeddings.request_body("m", request, {}) == {"input": ["a"], "dimensions": 8,
                                                         "encoding_format": "base64", "user": "u", "model": "m"}
    assert embeddings.request_body("m", request, {"encoding_format": "float"})["encoding_format"] == "float"
    assert request.extra["encoding_format"] == "base64"  # the request itself is left alone


@pytest.mark.parametrize("content", [b"not json", b"[]", b'{"data": {}}', b'{"data": [{"vector": [1]}]}',
                                     b'{"data": [{"embedding": 3}]}', b'{"object": "list"}'])
def test_parse_embeddings_not_a_list_is_malformed(content):
    with pytest.raises(ProviderError) as caught:
        embeddings.parse_embeddings(content, "m", 1)
    assert caught.value.kind is ErrorKind.MALFORMED


def test_parse_embeddings_counts_the_vectors_and_reads_usage():
    body = orjson.dumps({"data": [{"embedding": [0.5]}, {"embedding": "AAAAPw=="}], "model": "served",
                         "usage": {"prompt_tokens": 7, "total_tokens": 7}})
    completion = embeddings.parse_embeddings(body, "fallback", 2)
    assert completion.model == "served" and completion.usage == Usage(7, 0, 7) and completion.text == ""
    with pytest.raises(ProviderError, match="answered 2 embeddings for 3 inputs"):
        embeddings.parse_embeddings(body, "fallback", 3)


async def test_embed_sends_the_key_and_reads_the_list(upstream):
    async with UpstreamHTTP() as client:
        completion = await embed(embedder_config(upstream), embeddings_request(["a b", "c"], dimensions=3), client)
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1/embeddings" and sent["headers"]["authorization"] == f"Bearer {SECRET}"
    assert sent["json"] == {"input": ["a b", "c"], "dimensions": 3, "model": "e"}
    assert [len(item["embedding"]) for item in completion.raw["data"]] == [3, 3]
    assert completion.usage == Usage(3, 0, 3) and completion.upstream_ms > 0


async def test_embed_without_usage_estimates_it(upstream):
    upstream.set_behavior("e", {"kind": "status", "status": 200, "body": {"data": [{"embedding": [1.0]}]}})
    async with UpstreamHTTP() as client:
        completion = await embed(embedder_config(upstream), embeddings_request("twelve chars"), client)
    assert completion.usage.estimated and completion.usage.prompt_tokens == 3 and completion.model == "e"


@pytest.mark.parametrize("behavior, kind", [
    ({"kind": "status", "status": 503}, ErrorKind.STATUS),
    ({"kind": "malformed"}, ErrorKind.MALFORMED),
    ({"kind": "empty_choices"}, ErrorKind.MALFORMED),
    ({"kind": "stream_error_event", "cut_after": 1}, ErrorKind.MALFORMED),
    ({"kind": "stream_cut", "cut_after": 1}, ErrorKind.CONNECTION),
    ({"kind": "reset_mid_body"}, ErrorKind.CONNECTION),
    ({"kind": "drop"}, ErrorKind.CONNECTION),
    ({"kind": "stream_stall", "cut_after": 1}, ErrorKind.TIMEOUT),
    ({"kind": "slow_first_byte", "delay_s": 2}, ErrorKind.TIMEOUT),
], ids=lambda value: value["kind"] if isinstance(value, dict) else None)
async def test_embed_failures_are_provider_errors(upstream, behavior, kind):
    upstream.set_behavior("e", behavior)
    async with UpstreamHTTP() as client:
        with pytest.raises(ProviderError) as caught:
            await embed(embedder_config(upstream, timeout_s=0.3), embeddings_request(), client)
    assert caught.value.kind is kind
    assert SECRET[:12] not in str(caught.value)


async def test_embed_error_status_keeps_the_upstreams_words_for_the_client(upstream):
    body = {"error": {"message": "This model's maximum context length is 8192 tokens", "type": "invalid_request_error",
                      "param": "input", "code": None}}
    upstream.set_behavior("e", {"kind": "status", "status": 400, "body": body})
    async with UpstreamHTTP() as client:
        with pytest.raises(ProviderError) as caught:
            await embed(embedder_config(upstream), embeddings_request(), client)
    error = caught.value
    assert error.status == 400 and error.param == "input" and error.code == "context_length_exceeded"
