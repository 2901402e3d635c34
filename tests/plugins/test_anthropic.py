"""plugins/anthropic/ (and anthropic_convert.py): OpenAI requests to Anthropic's Messages API and back.

The converters are tested with plain dicts, the adapter against the fake upstream's
``/v1/messages`` with the gateway's own client (``modelbroker._upstream.client.UpstreamHTTP``), and the whole path through a real
gateway with the official ``openai`` client. The tests this adapter shares with Gemini's, case for case, are in
test_native_adapters.py.
"""

from __future__ import annotations

import json
import time

import openai
import pytest

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.types import ChatRequest, ErrorKind, ProviderError, Usage
from modelbroker._upstream.client import UpstreamHTTP
from modelbroker.plugins import anthropic
from modelbroker.plugins.anthropic.convert import (
    StreamState,
    convert_messages,
    convert_tool_choice,
    parse_message,
    parse_usage,
    request_body,
)

SECRET = "sk-ant-adapter-test-SECRET-0123456789abcdef"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
PROMPT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello big world"}]


def chat_request(**fields) -> ChatRequest:
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return ChatRequest(**fields)


# --- request conversion -------------------------------------------------------------------


def test_system_and_developer_messages_become_the_system_string():
    system, messages = convert_messages([
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "text", "text": "use French"}]},
        {"role": "user", "content": "hi"},
    ])
    assert system == "be brief\n\nuse French"
    assert messages == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_content_parts_text_and_images():
    _, messages = convert_messages([{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "input_audio", "input_audio": {"data": "..."}},
        {"type": "text", "text": ""},
    ]}])
    assert messages[0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_tool_calls_and_results_round_trip():
    _, messages = convert_messages([
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "not json"}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rainy"}]},
        {"role": "user", "content": "thanks"},
    ])
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
    ]
    assert messages[2]["content"] == [  # both results and the next user turn in one user message
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "rainy"},
        {"type": "text", "text": "thanks"},
    ]


def test_empty_messages_are_dropped():
    _, messages = convert_messages([{"role": "user", "content": ""}, {"role": "assistant", "content": None},
                                    {"role": "user", "content": "x"}])
    assert messages == [{"role": "user", "content": [{"type": "text", "text": "x"}]}]


def test_request_body_fields():
    request = chat_request(messages=PROMPT, max_tokens=50, temperature=0.3, stream=True, extra={
        "top_p": 0.9, "stop": "END", "tools": TOOLS, "tool_choice": "required", "user": "u-1",
        "seed": 7, "response_format": {"type": "text"},
    })
    body = request_body("claude-x", request, {})
    assert body == {
        "model": "claude-x", "max_tokens": 50, "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello big world"}]}],
        "temperature": 0.3, "top_p": 0.9, "stop_sequences": ["END"],
        "tools": [{"name": "get_weather", "description": "Weather for a city",
                   "input_schema": TOOLS[0]["function"]["parameters"]}],
        "tool_choice": {"type": "any"}, "metadata": {"user_id": "u-1"}, "stream": True,
    }


def test_request_body_max_tokens_is_always_set():
    assert request_body("m", chat_request(), {})["max_tokens"] == 1024
    assert request_body("m", chat_request(), {"max_tokens": 99})["max_tokens"] == 99
    assert request_body("m", chat_request(extra={"max_completion_tokens": 12}), {"max_tokens": 99})["max_tokens"] == 12
    assert request_body("m", chat_request(max_tokens=5), {"max_tokens": 99})["max_tokens"] == 5


def test_request_body_clamps_temperature_and_lists_stops():
    body = request_body("m", chat_request(temperature=1.7, extra={"stop": ["a", "b"]}), {})
    assert body["temperature"] == 1.0 and body["stop_sequences"] == ["a", "b"]
    assert "stream" not in body and "system" not in body and "tools" not in body


@pytest.mark.parametrize("choice, parallel, expected", [
    ("auto", None, {"type": "auto"}),
    ("required", None, {"type": "any"}),
    ("none", None, {"type": "none"}),
    ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
    (None, None, None),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
])
def test_tool_choice_mapping(choice, parallel, expected):
    assert convert_tool_choice(choice, parallel) == expected


# --- response conversion ----------------------------------------------------------------------


def test_parse_usage_adds_cache_tokens_to_the_prompt():
    usage = parse_usage({"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 100,
                         "cache_creation_input_tokens": 20})
    assert usage == Usage(130, 4, 134, cached_tokens=100)
    assert parse_usage({"input_tokens": 3, "output_tokens": 2}) == Usage(3, 2, 5)
    assert parse_usage(None) == Usage()


def test_parse_message_text_and_tool_use_as_chat_completion():
    data = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
            "content": [{"type": "text", "text": "Let me check. "},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 9, "output_tokens": 5, "cache_read_input_tokens": 2}}
    completion = parse_message(data, "fallback")
    assert completion.text == "Let me check. " and completion.model == "claude-3-5-haiku-20241022"
    assert completion.usage == Usage(11, 5, 16, cached_tokens=2)
    raw = completion.raw
    assert raw["object"] == "chat.completion" and raw["id"] == "msg_1" and isinstance(raw["created"], int)
    choice = raw["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [{"id": "toolu_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    assert raw["usage"] == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16,
                            "prompt_tokens_details": {"cached_tokens": 2}}


def test_parse_message_tool_only_answer_has_null_content():
    data = {"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "stop_reason": "tool_use"}
    message = parse_message(data, "m").raw["choices"][0]["message"]
    assert message["content"] is None and message["tool_calls"][0]["function"]["arguments"] == "{}"


@pytest.mark.parametrize("stop_reason, finish", [("end_turn", "stop"), ("stop_sequence", "stop"),
                                                 ("max_tokens", "length"), ("tool_use", "tool_calls"),
                                                 ("refusal", "content_filter"), (None, "stop")])
def test_finish_reason_mapping(stop_reason, finish):
    data = {"content": [{"type": "text", "text": "x"}], "stop_reason": stop_reason}
    assert parse_message(data, "m").raw["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize("data", [{}, [], {"content": "text"}, None, {"type": "error"}])
def test_parse_message_not_a_message_is_malformed(data):
    with pytest.raises(ProviderError) as caught:
        parse_message(data, "m")
    assert caught.value.kind is ErrorKind.MALFORMED


# --- stream conversion ---------------------------------------------------------------------------


def feed_all(state: StreamState, events: list[dict]) -> list:
    return [chunk for event in events for chunk in state.feed(event)]


def test_stream_text_events_to_chunks():
    state = StreamState("fallback")
    chunks = feed_all(state, [
        {"type": "message_start", "message": {"id": "msg_9", "model": "claude-x", "content": [],
                                              "usage": {"input_tokens": 25, "output_tokens": 1,
                                                        "cache_read_input_tokens": 5}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 15}},
        {"type": "brand_new_event"},
    ])
    assert not state.done
    assert state.feed({"type": "message_stop"}) == [] and state.done
    assert chunks[0].raw["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0].has_content is False and chunks[0].model == "claude-x"
    assert [c.text for c in chunks[1:3]] == ["Hel", "lo"] and all(c.has_content for c in chunks[1:3])
    assert chunks[3].finish_reason == "length" and chunks[3].raw["choices"][0]["delta"] == {}
    usage_chunk = chunks[4]
    assert usage_chunk.raw["choices"] == [] and usage_chunk.usage == Usage(30, 15, 45, cached_tokens=5)
    assert usage_chunk.raw["usage"]["total_tokens"] == 45
    assert len(chunks) == 5
    assert all(c.raw["id"] == "msg_9" and c.raw["object"] == "chat.completion.chunk" for c in chunks)


def test_stream_tool_use_events_to_tool_call_deltas():
    state = StreamState("m")
    chunks = feed_all(state, [
        {"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking."}},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city":'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 20}},
    ])
    deltas = [c.raw["choices"][0]["delta"] for c in chunks if c.raw["choices"]]
    assert deltas[2] == {"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function",
                                         "function": {"name": "get_weather", "arguments": ""}}]}
    assert deltas[3:5] == [{"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
                           {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}]
    assert all(c.has_content and c.text == "" for c in chunks[2:5])
    assert chunks[5].finish_reason == "tool_calls"


def test_stream_thinking_deltas_are_not_content():
    state = StreamState("m")
    assert state.feed({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "thinking_delta", "thinking": "hmm"}}) == []


def test_stream_error_event_raises_redacted_error_event():
    state = StreamState("m", SECRET)
    with pytest.raises(ProviderError) as caught:
        state.feed({"type": "error", "error": {"type": "overloaded_error", "message": f"Overloaded {SECRET}"}})
    assert caught.value.kind is ErrorKind.ERROR_EVENT and caught.value.code == "overloaded_error"
    assert "Overloaded" in caught.value.message and SECRET[:12] not in caught.value.message


@pytest.mark.parametrize("data", ["{oops", "[1]", '"text"'])
def test_parse_event_not_an_object_is_malformed(data):
    with pytest.raises(ProviderError) as caught:
        anthropic.parse_event(data)
    assert caught.value.kind is ErrorKind.MALFORMED


# --- errors and headers --------------------------------------------------------------------------


def test_upstream_error_reads_anthropic_shape_and_marks_long_prompts():
    body = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).encode()
    error = anthropic.upstream_error(529, {}, body, SECRET)
    assert error.kind is ErrorKind.STATUS and error.status == 529 and error.code == "overloaded_error"
    assert "Overloaded" in error.message
    body = json.dumps({"type": "error", "error": {"type": "invalid_request_error",
                                                  "message": "prompt is too long: 210000 tokens > 200000 maximum"}})
    error = anthropic.upstream_error(400, {}, body.encode(), SECRET)
    assert error.context_too_long and error.code == "context_length_exceeded"


def test_upstream_error_marks_a_spent_credit_balance_as_an_exhausted_quota():
    """The policy reads codes only: the adapter turns Anthropic's wording into one."""
    message = "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing."
    body = json.dumps({"type": "error", "error": {"type": "invalid_request_error", "message": message}}).encode()
    error = anthropic.upstream_error(400, {}, body, SECRET)
    assert (error.code, error.quota_exhausted) == ("insufficient_quota", True)
    assert not anthropic.upstream_error(500, {}, body, SECRET).quota_exhausted


def test_upstream_error_never_holds_the_key():
    body = json.dumps({"type": "error", "error": {"type": "authentication_error",
                                                  "message": f"invalid x-api-key {SECRET}"}}).encode()
    error = anthropic.upstream_error(401, {}, body, SECRET)
    assert SECRET[:12] not in error.message and "***" in error.message


def test_rate_limit_headers():
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30))
    limit = anthropic.rate_limit_of({
        "anthropic-ratelimit-requests-remaining": "49", "anthropic-ratelimit-tokens-remaining": "39000",
        "anthropic-ratelimit-requests-reset": reset, "anthropic-ratelimit-tokens-reset": "not a date",
    })
    assert limit.remaining_requests == 49 and limit.remaining_tokens == 39000
    assert 25 < limit.reset_requests_s <= 31 and limit.reset_tokens_s is None
    assert anthropic.rate_limit_of({"x-ratelimit-remaining-requests": "3"}) is None


def test_request_headers():
    assert anthropic.request_headers(None, {}) == {"content-type": "application/json",
                                                   "anthropic-version": "2023-06-01"}
    headers = anthropic.request_headers("k", {"anthropic_version": "2024-01-01"})
    assert headers["x-api-key"] == "k" and headers["anthropic-version"] == "2024-01-01"


# --- against the fake upstream -----------------------------------------------------------------------


def claude(upstream, model: str = "claude-t", **fields) -> ProviderConfig:
    fields.setdefault("api_key", SECRET)
    return ProviderConfig(name="claude", type="anthropic", endpoint=upstream.endpoint("anthropic"), model=model,
                          cost_per_1k_tokens=0.0, **fields)


async def collect(chunks) -> list:
    return [chunk async for chunk in chunks]


async def test_complete_sends_key_version_and_converted_body(upstream):
    request = chat_request(messages=PROMPT)
    async with UpstreamHTTP() as client:
        completion = await anthropic.complete(claude(upstream, options={"anthropic_version": "2099-01-01"}),
                                              request, client)
    assert completion.text == "Fake reply from claude-t: hello big world"
    assert completion.usage == Usage(5, 7, 12, cached_tokens=0)
    sent = upstream.requests[-1]
    assert sent["headers"]["x-api-key"] == SECRET and sent["headers"]["anthropic-version"] == "2099-01-01"
    assert sent["json"]["system"] == "be brief" and sent["json"]["max_tokens"] == 1024
    assert "stream" not in sent["json"]


async def test_open_stream_yields_chunks_and_usage(upstream):
    async with UpstreamHTTP() as client:
        chunks = await collect(await anthropic.open_stream(claude(upstream), chat_request(messages=PROMPT,
                                                                                          stream=True), client))
    assert "".join(c.text for c in chunks) == "Fake reply from claude-t: hello big world"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert [c.usage for c in chunks if c.usage] == [Usage(5, 7, 12, cached_tokens=0)]
    assert upstream.requests[-1]["json"]["stream"] is True


# --- through the gateway -------------------------------------------------------------------------------


@pytest.fixture
def claude_gateway(gateway, provider, upstream):
    """``claude_gateway(*extra_providers, **claude_fields)``: a gateway whose first provider is
    Anthropic on the fake upstream; retries off so fallbacks are immediate."""

    def start(*extra: dict, **fields):
        fields = {"api_key": SECRET, **fields}
        entry = provider("claude", model="claude-t", type="anthropic", endpoint=upstream.endpoint("anthropic"),
                         priority=1, **fields)
        if entry["api_key"] is None:
            del entry["api_key"]
        return gateway({"providers": [entry, *extra], "reliability": {"retries": 0}})

    return start


def oa_client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", timeout=10, max_retries=0)


def test_chat_completions_with_system_prompt_and_tools(claude_gateway, upstream):
    gw = claude_gateway()
    oa = oa_client(gw)
    answer = oa.chat.completions.create(model="auto", messages=PROMPT)
    assert answer.choices[0].message.content == "Fake reply from claude-t: hello big world"
    assert answer.choices[0].finish_reason == "stop" and answer.usage.total_tokens == 12
    assert upstream.requests[-1]["json"]["system"] == "be brief"
    answer = oa.chat.completions.create(model="auto", messages=PROMPT, tools=TOOLS, tool_choice="auto")
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert choice.message.tool_calls[0].function.arguments == "{}"
    sent = upstream.requests[-1]["json"]
    assert sent["tools"][0]["input_schema"] == TOOLS[0]["function"]["parameters"]
    assert sent["tool_choice"] == {"type": "auto"}


def test_generate_stream(claude_gateway):
    gw = claude_gateway()
    with gw.client.stream("POST", "/generate", json={"prompt": "hello big world", "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert "".join(e.get("delta", "") for e in events) == "Fake reply from claude-t: hello big world"
    assert events[-1]["done"] is True and events[-1]["tokens"] == 10


def test_stream_cut_after_content_ends_with_an_error_event(claude_gateway, provider, upstream):
    upstream.set_behavior("claude-t", {"kind": "stream_cut", "cut_after": 2})
    gw = claude_gateway(provider("backup", priority=2))
    payload = {"model": "auto", "messages": PROMPT, "stream": True}
    with gw.client.stream("POST", "/v1/chat/completions", json=payload) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "stream_interrupted"
    assert sum(1 for e in events[:-1] if json.loads(e)["choices"][0]["delta"].get("content")) == 2
    lines = gw.log_lines()
    assert len(lines) == 1 and lines[0]["error_kind"] == "partial"

