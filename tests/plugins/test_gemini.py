"""plugins/gemini/ (convert.py, answer.py, embeddings.py): OpenAI requests to Gemini's
generateContent and back, the OpenAI features it carries (``response_format``, ``n``, ``seed``,
``logprobs``), and embeddings through ``embedContent``/``batchEmbedContents``.

The converters are tested with plain dicts, the adapter against the fake upstream's
``/v1beta/models/{model}:generateContent`` with the gateway's own client (``modelbroker._upstream.client.UpstreamHTTP``), and the
whole path through a real gateway with the official ``openai`` client. The tests this adapter
shares with Anthropic's, case for case, are in test_native_adapters.py.
"""

from __future__ import annotations

import json

import openai
import orjson
import pytest
from openai_schema import assert_valid

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.policy import is_request_fault
from modelbroker._routing.types import ChatRequest, ErrorKind, ProviderError, Usage
from modelbroker._upstream.client import UpstreamHTTP
from modelbroker.plugins import gemini
from modelbroker.plugins.gemini import embeddings
from modelbroker.plugins.gemini.answer import StreamState, parse_response, parse_usage
from modelbroker.plugins.gemini.convert import (
    convert_messages,
    convert_tool_choice,
    convert_tools,
    request_body,
)

SECRET = "AIza-gemini-adapter-test-SECRET-0123456789"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                   "properties": {"city": {"type": "string"}}, "additionalProperties": False}}}]
PROMPT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello big world"}]


def chat_request(**fields) -> ChatRequest:
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return ChatRequest(**fields)


def response(parts, finish="STOP", usage=None, **top) -> dict:
    candidate = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], **({"usageMetadata": usage} if usage else {}), **top}


# --- request conversion -------------------------------------------------------------------


def test_system_becomes_system_instruction_and_roles_map():
    system, contents = convert_messages([
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": "use French"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "bonjour"},
        {"role": "user", "content": [{"type": "text", "text": "again"},
                                     {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}]},
    ])
    assert system == "be brief\n\nuse French"
    assert contents == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "bonjour"}]},
        {"role": "user", "parts": [{"text": "again"}, {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}}]},
    ]


def test_an_image_by_url_is_refused_not_dropped(gateway, provider, upstream):
    """Gemini fetches no image from a URL: the attempt is a 400 of the request, another provider
    takes it, and with none left the client is told why."""
    with pytest.raises(ProviderError) as caught:
        convert_messages([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}])
    assert caught.value.status == 400 and caught.value.param == "messages"
    picture = [{"role": "user", "content": [{"type": "text", "text": "what is it?"},
                                            {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}]
    alone = gateway({"providers": [provider("gem", type="gemini")]}, log=False)
    refused = alone.chat(picture)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["message"] == "images must be sent as data: URLs (base64) to this model"
    assert not upstream.requests
    both = gateway({"reliability": {"retries": 0}, "providers": [
        provider("gem", type="gemini", priority=1), provider("gpt", priority=2)]}, log=False)
    taken = both.chat(picture)
    assert taken.status_code == 200 and taken.headers["x-modelbroker-provider"] == "gpt/gpt"


def test_tool_calls_and_results_are_function_parts():
    _, contents = convert_messages([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "clear"}'},
        {"role": "tool", "tool_call_id": "unknown", "name": "other", "content": "plain text"},
    ])
    call = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    assert contents[1] == {"role": "model", "parts": [call]}
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}},
        {"functionResponse": {"name": "other", "response": {"content": "plain text"}}},
    ]}


def test_request_body_fields():
    request = chat_request(messages=PROMPT, max_tokens=50, temperature=1.5, extra={
        "top_p": 0.9, "stop": ["END"], "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    })
    body = request_body(request, {})
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hello big world"}]}]
    assert body["generationConfig"] == {"maxOutputTokens": 50, "temperature": 1.5, "topP": 0.9,
                                        "stopSequences": ["END"]}
    assert body["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}


def test_request_body_minimal_and_options_max_tokens():
    assert request_body(chat_request(), {}) == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    assert request_body(chat_request(extra={"stop": "x"}), {"max_tokens": 64})["generationConfig"] == {
        "maxOutputTokens": 64, "stopSequences": ["x"]}


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"mode": "AUTO"}), ("required", {"mode": "ANY"}), ("none", {"mode": "NONE"}), (None, None),
    ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
])
def test_tool_choice_mapping(choice, expected):
    assert convert_tool_choice(choice) == expected


def test_convert_tools_skips_what_is_not_a_function():
    assert convert_tools([{"type": "web_search"}, {"type": "function", "function": {"name": "f"}}]) == [{"name": "f"}]


# --- response conversion ----------------------------------------------------------------------


def test_parse_usage_counts_thoughts_as_completion_and_keeps_them_apart():
    usage = parse_usage({"promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 30,
                         "cachedContentTokenCount": 64, "totalTokenCount": 150})
    assert usage == Usage(100, 50, 150, cached_tokens=64, reasoning_tokens=30)
    assert parse_usage({"promptTokenCount": 3, "candidatesTokenCount": 2}) == Usage(3, 2, 5)
    assert parse_usage(None) == Usage()


def test_parse_response_text_without_thoughts():
    data = response([{"text": "thinking...", "thought": True}, {"text": "Hello "}, {"text": "there"}],
                    usage={"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6},
                    modelVersion="gemini-2.0-flash-001", responseId="r1")
    completion = parse_response(data, "fallback")
    assert completion.text == "Hello there" and completion.model == "gemini-2.0-flash-001"
    assert completion.usage == Usage(4, 2, 6)
    raw = completion.raw
    assert raw["object"] == "chat.completion" and raw["id"] == "r1"
    assert raw["choices"][0]["message"] == {"role": "assistant", "content": "Hello there", "refusal": None}
    assert raw["choices"][0]["logprobs"] is None
    assert raw["choices"][0]["finish_reason"] == "stop"
    assert raw["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def test_parse_response_function_call_is_a_tool_call():
    data = response([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}])
    choice = parse_response(data, "m").raw["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [{"id": "call_0", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city":"Paris"}'}}]


@pytest.mark.parametrize("reason, finish", [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
                                            ("RECITATION", "content_filter"), ("OTHER", "stop")])
def test_finish_reason_mapping(reason, finish):
    assert parse_response(response([{"text": "x"}], reason), "m").raw["choices"][0]["finish_reason"] == finish


def test_blocked_prompt_is_a_400_prompt_blocked():
    with pytest.raises(ProviderError) as caught:
        parse_response({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}, "m")
    error = caught.value
    assert error.kind is ErrorKind.STATUS and error.status == 400 and error.code == "prompt_blocked"
    assert "PROHIBITED_CONTENT" in error.message


@pytest.mark.parametrize("data", [{}, [], {"candidates": []}, None, {"candidates": ["x"]}])
def test_not_a_response_is_malformed(data):
    with pytest.raises(ProviderError) as caught:
        parse_response(data, "m")
    assert caught.value.kind is ErrorKind.MALFORMED


# --- stream conversion ---------------------------------------------------------------------------


def test_stream_responses_to_chunks_then_usage():
    state = StreamState("fallback")
    chunks = [c for data in [
        response([{"text": "Hel"}], None, {"promptTokenCount": 4, "totalTokenCount": 4},
                 modelVersion="gem", responseId="r"),
        response([{"text": "lo"}], None, {"promptTokenCount": 4, "totalTokenCount": 4}),
        response([{"text": "!"}], "STOP", {"promptTokenCount": 4, "candidatesTokenCount": 3, "totalTokenCount": 7}),
    ] for c in state.feed(data)]
    assert state.finished
    assert chunks[0].raw["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert [c.text for c in chunks] == ["Hel", "lo", "!"] and all(c.has_content for c in chunks)
    assert chunks[-1].finish_reason == "stop" and chunks[0].finish_reason is None
    assert all(c.raw["id"] == "r" and c.model == "gem" for c in chunks)
    usage = state.usage_chunk()
    assert usage.raw["choices"] == [] and usage.usage == Usage(4, 3, 7) and usage.raw["usage"]["total_tokens"] == 7


def test_stream_function_calls_get_distinct_indexes():
    state = StreamState("m")
    first = state.feed(response([{"functionCall": {"name": "a", "args": {}}}], None))
    second = state.feed(response([{"functionCall": {"name": "b", "args": {"x": 1}}}], "STOP"))
    assert first[0].has_content and first[0].text == ""
    calls = [chunks[0].raw["choices"][0]["delta"]["tool_calls"][0] for chunks in (first, second)]
    assert [(c["index"], c["id"], c["function"]["name"]) for c in calls] == [(0, "call_0", "a"), (1, "call_1", "b")]
    assert second[0].finish_reason == "tool_calls"


def test_stream_empty_chunks_and_usage_only_chunks_give_nothing():
    state = StreamState("m")
    assert state.feed({"usageMetadata": {"promptTokenCount": 2}}) == []
    assert state.feed(response([], None)) != []  # the role chunk comes first, even empty
    assert state.feed(response([{"text": ""}], None)) == []
    assert state.usage_chunk().usage == Usage(2, 0, 2)


def test_stream_error_event_and_blocked_prompt():
    with pytest.raises(ProviderError) as caught:
        StreamState("m", SECRET).feed({"error": {"code": 500, "message": f"boom {SECRET}", "status": "INTERNAL"}})
    assert caught.value.kind is ErrorKind.ERROR_EVENT and caught.value.code == "INTERNAL"
    assert "boom" in caught.value.message and SECRET[:12] not in caught.value.message
    with pytest.raises(ProviderError) as caught:
        StreamState("m").feed({"promptFeedback": {"blockReason": "SAFETY"}})
    assert caught.value.code == "prompt_blocked"


# --- errors, URLs and headers --------------------------------------------------------------------


def test_upstream_error_reads_google_shape():
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}
    body = json.dumps({"error": {"code": 429, "message": "Resource has been exhausted",
                                 "status": "RESOURCE_EXHAUSTED", "details": [retry]}})
    error = gemini.upstream_error(429, {}, body.encode(), SECRET)
    assert error.kind is ErrorKind.STATUS and error.status == 429 and error.code == "RESOURCE_EXHAUSTED"
    assert "Resource has been exhausted" in error.message and error.retry_after == 17.0


def test_upstream_error_array_form_long_prompt_and_redaction():
    body = json.dumps([{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message":
                                  f"The input token count (2000000) exceeds the maximum number of tokens allowed "
                                  f"(1048576). key={SECRET}"}}])
    error = gemini.upstream_error(400, {}, body.encode(), SECRET)
    assert error.context_too_long and error.code == "context_length_exceeded"
    assert SECRET[:12] not in error.message
    error = gemini.upstream_error(502, {}, b"<html>bad gateway</html>", SECRET)
    assert error.message.startswith("upstream answered 502")


def test_model_url_and_headers():
    base = "https://generativelanguage.googleapis.com/v1beta/models/"
    assert gemini.model_url(base, "models/gemini-2.0-flash", False) == base + "gemini-2.0-flash:generateContent"
    assert gemini.model_url(base, "g", True) == base + "g:streamGenerateContent?alt=sse"
    assert gemini.request_headers(None) == {"content-type": "application/json"}
    assert gemini.request_headers("k")["x-goog-api-key"] == "k"


# --- against the fake upstream -----------------------------------------------------------------------


def gem(upstream, model: str = "gem-t", **fields) -> ProviderConfig:
    fields.setdefault("api_key", SECRET)
    return ProviderConfig(name="gem", type="gemini", endpoint=upstream.endpoint("gemini"), model=model,
                          cost_per_1k_tokens=0.0, **fields)


async def collect(chunks) -> list:
    return [chunk async for chunk in chunks]


async def test_complete_sends_key_header_not_in_url(upstream):
    async with UpstreamHTTP() as client:
        completion = await gemini.complete(gem(upstream), chat_request(messages=PROMPT), client)
    assert completion.text == "Fake reply from gem-t: hello big world" and completion.usage == Usage(5, 7, 12)
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1beta/models/gem-t:generateContent" and SECRET not in sent["path"]
    assert sent["headers"]["x-goog-api-key"] == SECRET
    assert sent["json"]["systemInstruction"] == {"parts": [{"text": "be brief"}]}


async def test_open_stream_yields_chunks_and_usage(upstream):
    async with UpstreamHTTP() as client:
        request = chat_request(messages=PROMPT, stream=True)
        chunks = await collect(await gemini.open_stream(gem(upstream), request, client))
    assert "".join(c.text for c in chunks) == "Fake reply from gem-t: hello big world"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert [c.usage for c in chunks if c.usage] == [Usage(5, 7, 12)] and chunks[-1].usage is not None
    assert upstream.requests[-1]["path"] == "/v1beta/models/gem-t:streamGenerateContent?alt=sse"


# --- through the gateway -------------------------------------------------------------------------------


@pytest.fixture
def gem_gateway(gateway, provider, upstream):
    """``gem_gateway(*extra_providers, **gemini_fields)``: a gateway whose first provider is
    Gemini on the fake upstream; retries off so fallbacks are immediate."""

    def start(*extra: dict, **fields):
        fields = {"api_key": SECRET, **fields}
        entry = provider("gem", model="gem-t", type="gemini", endpoint=upstream.endpoint("gemini"), priority=1, **fields)
        if entry["api_key"] is None:
            del entry["api_key"]
        return gateway({"providers": [entry, *extra], "reliability": {"retries": 0}})

    return start


def oa_client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", timeout=10, max_retries=0)


def test_chat_completions_with_system_prompt_and_tools(gem_gateway, upstream):
    gw = gem_gateway()
    oa = oa_client(gw)
    answer = oa.chat.completions.create(model="auto", messages=PROMPT)
    assert answer.choices[0].message.content == "Fake reply from gem-t: hello big world"
    assert answer.choices[0].finish_reason == "stop" and answer.usage.total_tokens == 12
    assert upstream.requests[-1]["json"]["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    answer = oa.chat.completions.create(model="auto", messages=PROMPT, tools=TOOLS, tool_choice="required")
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "get_weather"
    sent = upstream.requests[-1]["json"]
    assert sent["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


def test_stream_without_include_usage_hides_the_usage_chunk(gem_gateway):
    gw = gem_gateway()
    chunks = list(oa_client(gw).chat.completions.create(model="auto", messages=PROMPT, stream=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


def test_stream_cut_after_content_ends_with_an_error_event(gem_gateway, provider, upstream):
    upstream.set_behavior("gem-t", {"kind": "stream_cut", "cut_after": 2})
    gw = gem_gateway(provider("backup", priority=2))
    with gw.client.stream("POST", "/generate", json={"prompt": "hi", "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert sum(1 for e in events if e.get("delta")) == 2
    assert events[-1]["error"]["code"] == "stream_interrupted"
    lines = gw.log_lines()
    assert len(lines) == 1 and lines[0]["error_kind"] == "partial"



# --- features: what the adapter carries, and into which Gemini field -----------------------------------------

STRICT_SCHEMA = {"type": "object", "properties": {"city": {"type": ["string", "null"]}}, "required": ["city"],
                 "additionalProperties": False, "$defs": {"unused": {"type": "string"}}}


def test_the_adapter_states_the_features_it_carries():
    assert gemini.GeminiGenerateContent.features == {"tools", "parallel_tool_calls", "json_object", "json_schema",
                                                     "images", "n", "seed", "logprobs"}


@pytest.mark.parametrize("extra, config", [
    ({"response_format": {"type": "json_object"}}, {"responseMimeType": "application/json"}),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "city", "strict": True,
                                                                 "schema": STRICT_SCHEMA}}},
     {"responseMimeType": "application/json", "responseJsonSchema": STRICT_SCHEMA}),
    ({"response_format": {"type": "text"}}, None),
    ({"n": 3, "seed": 42}, {"candidateCount": 3, "seed": 42}),
    ({"n": 1}, None),
    ({"logprobs": True}, {"responseLogprobs": True}),
    ({"logprobs": True, "top_logprobs": 4}, {"responseLogprobs": True, "logprobs": 4}),
    ({"presence_penalty": 0.5, "frequency_penalty": -0.5}, {"presencePenalty": 0.5, "frequencyPenalty": -0.5}),
], ids=["json_object", "json_schema", "text", "n-seed", "n-1", "logprobs", "top_logprobs", "penalties"])
def test_features_become_generation_config(extra, config):
    """The schema goes as it is written (additionalProperties, type lists, $defs): responseJsonSchema takes JSON Schema."""
    assert request_body(chat_request(extra=extra), {}).get("generationConfig") == config


def test_parse_response_candidates_are_choices_with_logprobs():
    logprobs = {"chosenCandidates": [{"token": "Hi", "tokenId": 5, "logProbability": -0.25}, {"token": "!"}],
                "topCandidates": [{"candidates": [{"token": "Hi", "logProbability": -0.25},
                                                  {"token": "Yo", "logProbability": -2}]}, {}]}
    data = {"candidates": [{"content": {"parts": [{"text": "Hi!"}]}, "finishReason": "STOP", "logprobsResult": logprobs},
                           {"content": {"parts": [{"text": "Yo"}]}, "finishReason": "MAX_TOKENS", "index": 1}]}
    completion = parse_response(data, "m")
    first, second = completion.raw["choices"]
    assert completion.text == "Hi!"
    assert (first["index"], second["index"], second["finish_reason"]) == (0, 1, "length")
    assert second["message"] == {"role": "assistant", "content": "Yo", "refusal": None} and second["logprobs"] is None
    assert first["logprobs"] == {"refusal": None, "content": [
        {"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": [
            {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}, {"token": "Yo", "logprob": -2.0, "bytes": [89, 111]}]},
        {"token": "!", "logprob": 0.0, "bytes": [33], "top_logprobs": []}]}


def test_stream_with_two_candidates_ends_when_both_have():
    state = StreamState("m")
    both = {"candidates": [{"content": {"parts": [{"text": "a"}]}}, {"content": {"parts": [{"text": "b"}]}, "index": 1}]}
    chunks = state.feed(both)
    assert [(c.raw["choices"][0]["index"], c.raw["choices"][0]["delta"]) for c in chunks] == [
        (0, {"role": "assistant", "content": "a"}), (1, {"role": "assistant", "content": "b"})]
    state.feed({"candidates": [{"content": {"parts": [{"text": "!"}]}, "finishReason": "STOP"}]})
    assert not state.finished  # the second candidate has not ended
    last = state.feed({"candidates": [{"content": {"parts": []}, "finishReason": "STOP", "index": 1}]})
    assert state.finished and last[0].raw["choices"][0] == {"index": 1, "delta": {}, "logprobs": None,
                                                            "finish_reason": "stop"}


# --- embeddings (embeddings.py, and embed() against the fake upstream) ---------------------------------------


def embeddings_request(value, **fields) -> ChatRequest:
    return ChatRequest(messages=[], kind="embeddings", extra={"input": value, **fields})


def test_embed_calls_one_input_several_and_many():
    assert embeddings.embed_calls(embeddings_request("hi", dimensions=8), "models/g", {"task_type": "retrieval_query"}) \
        == [("embedContent", {"content": {"parts": [{"text": "hi"}]}, "taskType": "RETRIEVAL_QUERY",
                              "outputDimensionality": 8})]
    calls = embeddings.embed_calls(embeddings_request([str(i) for i in range(250)], task_type="CLUSTERING"), "g", {})
    assert [(method, len(body["requests"])) for method, body in calls] == [("batchEmbedContents", 100)] * 2 + [
        ("batchEmbedContents", 50)]
    assert calls[2][1]["requests"][-1] == {"model": "models/g", "content": {"parts": [{"text": "249"}]},
                                           "taskType": "CLUSTERING"}


@pytest.mark.parametrize("value", [[1, 2, 3], [[1], [2]]])
def test_token_arrays_are_refused_as_the_requests_fault(value):
    with pytest.raises(ProviderError) as caught:
        embeddings.embed_calls(embeddings_request(value), "g", {}, "gem/g")
    error = caught.value
    assert error.status == 400 and error.code == "unsupported_input" and error.param == "input"
    assert "'gem/g'" in error.message and error.detail == error.message
    assert is_request_fault(error)


@pytest.mark.parametrize("data, method", [({}, "embedContent"), ({"embedding": {"values": "x"}}, "embedContent"),
                                          ({"embeddings": [{"values": [1.0]}]}, "batchEmbedContents"),
                                          ([], "batchEmbedContents")])
def test_read_vectors_refuses_what_is_not_the_expected_answer(data, method):
    with pytest.raises(ProviderError) as caught:
        embeddings.read_vectors(data, method, 2 if method == "batchEmbedContents" else 1)
    assert caught.value.kind is ErrorKind.MALFORMED


def embedder(upstream, **fields) -> ProviderConfig:
    return gem(upstream, model="gemini-embedding-001", kind="embeddings", **fields)


async def test_embed_one_and_several_against_the_fake(upstream):
    async with UpstreamHTTP() as client:
        one = await gemini.embed(embedder(upstream), embeddings_request("hello there", dimensions=3), client)
        several = await gemini.embed(embedder(upstream), embeddings_request(["a", "b c"], dimensions=2), client)
    assert [len(item["embedding"]) for item in one.raw["data"]] == [3]
    assert [item["index"] for item in several.raw["data"]] == [0, 1]
    assert several.usage.estimated and several.raw["usage"]["prompt_tokens"] == several.usage.prompt_tokens
    assert [r["path"] for r in upstream.requests] == ["/v1beta/models/gemini-embedding-001:embedContent",
                                                      "/v1beta/models/gemini-embedding-001:batchEmbedContents"]
    assert upstream.requests[-1]["headers"]["x-goog-api-key"] == SECRET


@pytest.mark.parametrize("behavior, kind", [
    ({"kind": "status", "status": 429, "error_code": "RESOURCE_EXHAUSTED"}, ErrorKind.STATUS),
    ({"kind": "malformed"}, ErrorKind.MALFORMED),
    ({"kind": "empty_choices"}, ErrorKind.MALFORMED),
    ({"kind": "stream_error_event", "cut_after": 1}, ErrorKind.MALFORMED),
    ({"kind": "stream_cut", "cut_after": 1}, ErrorKind.CONNECTION),
    ({"kind": "drop"}, ErrorKind.CONNECTION),
    ({"kind": "slow_first_byte", "delay_s": 2}, ErrorKind.TIMEOUT),
], ids=lambda value: value["kind"] if isinstance(value, dict) else None)
@pytest.mark.parametrize("value", ["one", ["one", "two"]], ids=["single", "batch"])
async def test_embed_failures_are_provider_errors(upstream, behavior, kind, value):
    upstream.set_behavior("gemini-embedding-001", behavior)
    async with UpstreamHTTP() as client:
        with pytest.raises(ProviderError) as caught:
            await gemini.embed(embedder(upstream, timeout_s=0.3), embeddings_request(value), client)
    assert caught.value.kind is kind
    if kind is ErrorKind.STATUS:
        assert caught.value.code == "RESOURCE_EXHAUSTED" and caught.value.status == 429


async def test_the_fake_refuses_a_batch_gemini_would_refuse(upstream):
    body = {"requests": [{"model": "models/other", "content": {"parts": [{"text": "x"}]}}]}
    too_many = {"requests": [{"model": "models/g", "content": {"parts": [{"text": "x"}]}}] * 101}
    async with UpstreamHTTP() as client:
        for payload in (body, too_many):
            reply = await client.post(upstream.endpoint("gemini") + "/g:batchEmbedContents", orjson.dumps(payload),
                                      gemini.request_headers(SECRET), timeout_s=3, connect_timeout_s=3)
            assert reply.status == 400 and orjson.loads(reply.body)["error"]["status"] == "INVALID_ARGUMENT"


# --- features through the gateway -------------------------------------------------------------------------


def test_json_schema_n_and_seed_reach_gemini_and_n_choices_come_back(gem_gateway, upstream):
    oa = oa_client(gem_gateway())
    schema = {"type": "json_schema", "json_schema": {"name": "reply", "schema": STRICT_SCHEMA, "strict": True}}
    answer = oa.chat.completions.create(model="auto", messages=PROMPT, response_format=schema, n=3, seed=7)
    config = upstream.requests[-1]["json"]["generationConfig"]
    assert config == {"responseMimeType": "application/json", "responseJsonSchema": STRICT_SCHEMA,
                      "candidateCount": 3, "seed": 7}
    assert [choice.index for choice in answer.choices] == [0, 1, 2]
    assert json.loads(answer.choices[2].message.content) == {"reply": "Fake reply from gem-t: hello big world"}
    answer = oa.chat.completions.create(model="auto", messages=PROMPT, response_format={"type": "json_object"})
    assert upstream.requests[-1]["json"]["generationConfig"] == {"responseMimeType": "application/json"}
    assert json.loads(answer.choices[0].message.content)["reply"].startswith("Fake reply")


def test_logprobs_come_back_in_the_choice(gem_gateway, upstream):
    answer = oa_client(gem_gateway()).chat.completions.create(model="auto", messages=PROMPT, logprobs=True,
                                                              top_logprobs=2)
    assert upstream.requests[-1]["json"]["generationConfig"] == {"responseLogprobs": True, "logprobs": 2}
    tokens = answer.choices[0].logprobs.content
    assert [t.token for t in tokens] == answer.choices[0].message.content.split()
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].token == t.token for t in tokens)


def test_a_stream_of_two_candidates(gem_gateway):
    chunks = list(oa_client(gem_gateway()).chat.completions.create(model="auto", messages=PROMPT, n=2, stream=True))
    by_choice = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            by_choice[choice.index] += choice.delta.content or ""
    assert by_choice == {0: "Fake reply from gem-t: hello big world", 1: "Fake reply from gem-t: hello big world"}
    finished = [(c.choices[0].index, c.choices[0].finish_reason) for c in chunks if c.choices[0].finish_reason]
    assert sorted(finished) == [(0, "stop"), (1, "stop")]


def test_every_chat_answer_holds_to_openais_schema(gem_gateway):
    gw = gem_gateway()
    answer = gw.chat(PROMPT, n=2, logprobs=True, top_logprobs=1)
    assert answer.status_code == 200, answer.text
    assert_valid(answer.json(), "CreateChatCompletionResponse")


def test_audio_is_not_carried_so_it_goes_elsewhere(gem_gateway, provider, upstream):
    audio = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]
    answer = gem_gateway().chat(audio)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "unsupported_feature"
    assert not upstream.requests
    answer = gem_gateway(provider("backup", priority=2)).chat(audio)
    assert answer.status_code == 200 and answer.headers["x-modelbroker-skipped"] == "gem/gem-t (lacks audio)"
