"""plugins/gemini/ (and gemini_convert.py): OpenAI requests to Gemini's generateContent and back.

The converters are tested with plain dicts, the adapter against the fake upstream's
``/v1beta/models/{model}:generateContent`` with the gateway's own client (``modelbroker._upstream.client.UpstreamHTTP``), and the
whole path through a real gateway with the official ``openai`` client. The tests this adapter
shares with Anthropic's, case for case, are in test_native_adapters.py.
"""

from __future__ import annotations

import json

import openai
import pytest

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.types import ChatRequest, ErrorKind, ProviderError, Usage
from modelbroker._upstream.client import UpstreamHTTP
from modelbroker.plugins import gemini
from modelbroker.plugins.gemini.convert import (
    StreamState,
    convert_messages,
    convert_tool_choice,
    convert_tools,
    parse_response,
    parse_usage,
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
                                     {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]},
    ])
    assert system == "be brief\n\nuse French"
    assert contents == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "bonjour"}]},
        {"role": "user", "parts": [{"text": "again"}, {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}}]},
    ]


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
    assert raw["choices"][0]["message"] == {"role": "assistant", "content": "Hello there"}
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

