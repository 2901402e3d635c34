"""POST /v1/responses, answered whole, through the official openai SDK: what reaches the
upstream in chat form, what comes back as a Response, and what is refused by name."""

from __future__ import annotations

import json

import openai
import orjson
import pytest

from modelbroker import Completion, Usage
from modelbroker.plugins.responses.answer import whole_response
from modelbroker.plugins.responses.request import ResponseCall

from .conftest import RELIABILITY

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}, "strict": True}
PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def sent(upstream) -> dict:
    """The body of the last request the upstream received."""
    return upstream.requests[-1]["json"]


def test_a_string_input_gives_a_response_the_sdk_reads(start, provider, upstream, client):
    gw = start(provider("a"))
    raw = client(gw).responses.with_raw_response.create(model="a", input="hello there")
    response = raw.parse()
    assert response.output_text == "Fake reply from a: hello there"
    assert response.id.startswith("resp_") and response.object == "response" and response.status == "completed"
    assert response.model == "a" and response.error is None and response.incomplete_details is None
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert message.id.startswith("msg_") and message.content[0].annotations == []
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (2, 6, 8)
    assert usage.input_tokens_details.cached_tokens == 0 and usage.output_tokens_details.reasoning_tokens == 0
    assert (response.store, response.parallel_tool_calls, response.tool_choice, response.tools) == (True, True, "auto", [])
    assert response.text.format.type == "text" and response.metadata == {}
    assert raw.headers["x-modelbroker-provider"] == "a/a" and raw.headers["x-request-id"]
    assert sent(upstream) == {"model": "a", "messages": [{"role": "user", "content": "hello there"}]}

    second = client(gw).responses.create(model="a", input="hello there")
    assert second.id != response.id  # every response its own id
    lines = [line for line in gw.log_lines() if line["attempt"] > 0]
    assert [line["surface"] for line in lines] == ["responses", "responses"]


def test_the_path_without_v1_answers_too(start, provider, upstream):
    gw = start(provider("a"))
    answer = gw.post("/responses", json={"input": "hi"})
    assert answer.status_code == 200 and answer.json()["output"][0]["content"][0]["text"] == "Fake reply from a: hi"


def test_instructions_and_input_items_become_chat_messages(start, provider, upstream, client):
    gw = start(provider("a"))
    response = client(gw).responses.create(
        model="a",
        instructions="Answer briefly.",
        input=[
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                         {"type": "input_image", "image_url": PIXEL, "detail": "low"},
                                         {"type": "input_image", "image_url": "https://example.com/a.png"}]},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
             "content": [{"type": "output_text", "text": "A pixel.", "annotations": []}]},
            {"role": "user", "content": [{"type": "input_text", "text": "And now?"}]},
        ],
    )
    assert response.output_text == "Fake reply from a: And now?"
    assert response.instructions == "Answer briefly."
    assert sent(upstream)["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "developer", "content": "Use metric units."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
        {"role": "assistant", "content": "A pixel."},
        {"role": "user", "content": "And now?"},
    ]


def test_request_fields_reach_the_upstream_in_chat_form_and_are_echoed(start, provider, upstream, client):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
              "additionalProperties": False}
    upstream.set_behavior("a", {"kind": "ok", "reply": '{"answer": "yes"}'})
    gw = start(provider("a"))
    response = client(gw).responses.create(
        model="a", input="Is it?", max_output_tokens=50, temperature=0.3, top_p=0.9, user="tester",
        metadata={"ticket": "42"}, reasoning={"effort": "low"}, prompt_cache_key="conversation-7",
        text={"format": {"type": "json_schema", "name": "verdict", "schema": schema, "strict": True}},
    )
    assert json.loads(response.output_text) == {"answer": "yes"}
    body = sent(upstream)
    assert body == {
        "model": "a", "messages": [{"role": "user", "content": "Is it?"}], "max_tokens": 50, "temperature": 0.3,
        "top_p": 0.9, "user": "tester", "reasoning_effort": "low", "prompt_cache_key": "conversation-7",
        "response_format": {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema,
                                                                   "strict": True}},
    }
    assert (response.max_output_tokens, response.temperature, response.top_p, response.user) == (50, 0.3, 0.9, "tester")
    assert response.metadata == {"ticket": "42"} and response.reasoning.effort == "low"
    assert response.text.format.type == "json_schema" and response.text.format.name == "verdict"

    client(gw).responses.create(model="a", input="Is it?", text={"format": {"type": "json_object"}})
    assert sent(upstream)["response_format"] == {"type": "json_object"}


def test_function_tools_go_nested_and_calls_come_back_as_items(start, provider, upstream, client):
    gw = start(provider("a"))
    sdk = client(gw)
    response = sdk.responses.create(model="a", input="Weather in Paris?", tools=[WEATHER], tool_choice="auto",
                                    parallel_tool_calls=False)
    assert sent(upstream)["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city", "parameters": WEATHER["parameters"],
        "strict": True}}]
    assert sent(upstream)["tool_choice"] == "auto" and sent(upstream)["parallel_tool_calls"] is False
    [call] = response.output
    assert call.type == "function_call" and call.name == "get_weather" and call.arguments == "{}"
    assert call.call_id == "call_fake_1" and call.id.startswith("fc_") and call.status == "completed"
    assert response.output_text == "" and response.tools[0].name == "get_weather"
    assert response.parallel_tool_calls is False

    answered = sdk.responses.create(model="a", previous_response_id=response.id, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"celsius": 21}'}])
    assert answered.output_text == "Fake reply from a: Weather in Paris?"
    assert answered.previous_response_id == response.id
    assert sent(upstream)["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_fake_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_fake_1", "content": '{"celsius": 21}'},
    ]


def test_a_named_function_choice_and_a_whole_history_sent_as_input(start, provider, upstream, client):
    """Clients that keep the conversation themselves (Codex sends store: false and every item)."""
    gw = start(provider("a"))
    client(gw).responses.create(model="a", store=False, tools=[WEATHER],
                                tool_choice={"type": "function", "name": "get_weather"}, input=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city": "Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "21"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "25"}]},
    ])
    body = sent(upstream)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "21"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "25"}]},
    ]


@pytest.mark.parametrize("fields, param, code", [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_parameter"),
    ({"tools": [WEATHER, {"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[1].type",
     "unsupported_parameter"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice", "invalid_value"),
    ({"background": True}, "background", "unsupported_parameter"),
    ({"conversation": "conv_1"}, "conversation", "unsupported_parameter"),
    ({"truncation": "auto"}, "truncation", "unsupported_parameter"),
    ({"top_logprobs": 3}, "top_logprobs", "unsupported_parameter"),
    ({"include": ["message.output_text.logprobs"]}, "include[0]", "unsupported_parameter"),
    ({"frequency_penalty": 1}, "frequency_penalty", "unknown_parameter"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type", "unsupported_parameter"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "unsupported_parameter"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
     "input[0].content[0].file_id", "unsupported_parameter"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
     "input[0].content[0]", "unsupported_parameter"),
    ({"input": [{"role": "robot", "content": "hi"}]}, "input[0].role", "invalid_value"),
    ({"input": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": 7}]}]},
     "input[2].content[1].text", "invalid_type"),
    ({"input": [{"role": "user", "content": "hi"}, {"type": "function_call", "call_id": "c", "name": "f",
                                                    "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image"}]}]},
     "input[2].output[0]", "unsupported_parameter"),
    ({"input": [{"role": "user", "content": "hi"}, {"type": "function_call", "call_id": "c", "name": 5}]},
     "input[1].name", "invalid_type"),
    ({"input": 5}, "input", "invalid_type"),
    ({"input": []}, "input", "invalid_value"),
    ({"temperature": "hot"}, "temperature", "invalid_type"),
    ({"max_output_tokens": 0}, "max_output_tokens", "invalid_value"),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name", "invalid_value"),
    ({"metadata": {"n": 1}}, "metadata.n", "invalid_value"),
], ids=lambda value: json.dumps(value)[:40] if isinstance(value, dict) else None)
def test_what_the_gateway_cannot_honour_is_refused_by_name(start, provider, upstream, client, fields, param, code):
    gw = start(provider("a"))
    with pytest.raises(openai.BadRequestError) as refused:
        client(gw).responses.create(model="a", input="hi", extra_body=fields)  # sent as given, unchecked
    error = refused.value.body
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error"), error
    assert error["message"].startswith(param + ":") or error["message"].startswith("unknown parameter")
    assert upstream.requests == []  # nothing half-understood reached a provider


def test_optional_features_the_gateway_has_nothing_to_do_for_are_accepted(start, provider, upstream, client):
    """Codex with a reasoning model asks for encrypted reasoning; hosted-tool limits and
    stream obfuscation mean nothing without hosted tools and OpenAI's own stream."""
    gw = start(provider("a"))
    response = client(gw).responses.create(model="a", input="hi", include=["reasoning.encrypted_content"],
                                           max_tool_calls=3, truncation="disabled", background=False,
                                           store=False, top_logprobs=0)
    assert response.output_text == "Fake reply from a: hi" and response.max_tool_calls == 3
    assert sent(upstream) == {"model": "a", "messages": [{"role": "user", "content": "hi"}]}


def test_a_length_cut_answer_is_incomplete():
    """The fake upstream always finishes with stop; a chat answer cut at max_tokens is built here."""
    call = ResponseCall("resp_1", 1, [], {"max_output_tokens": 5}, True, None, 60.0)
    raw = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "The answer is"},
                        "finish_reason": "length"}]}
    response = orjson.loads(whole_response(call, Completion("The answer is", "m", Usage(3, 5, 8), raw=raw)))
    assert response["status"] == "incomplete" and response["completed_at"] is None
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    assert response["output"][0]["content"][0]["text"] == "The answer is"


def test_fallback_works_as_for_chat(gateway, provider, upstream, client):
    upstream.set_behavior("down", {"kind": "status", "status": 503})
    gw = gateway({"reliability": dict(RELIABILITY), "providers": [provider("down", priority=1),
                                                                  provider("up", priority=2)]})
    raw = client(gw).responses.with_raw_response.create(input="hello")
    assert raw.parse().output_text == "Fake reply from up: hello"
    assert raw.headers["x-modelbroker-provider"] == "up/up" and raw.headers["x-modelbroker-attempts"] == "2"

    upstream.set_behavior("up", {"kind": "status", "status": 500})
    with pytest.raises(openai.APIStatusError) as failed:
        client(gw).responses.create(input="hello")
    assert failed.value.status_code == 502 and failed.value.body["attempts"][0]["provider"] == "down/down"


def test_an_anthropic_provider_answers_and_calls_tools(start, provider, upstream, client):
    gw = start(provider("claude", type="anthropic"))
    sdk = client(gw)
    response = sdk.responses.create(model="claude", instructions="Be brief.", input="hello there")
    assert response.output_text == "Fake reply from claude: hello there"
    assert upstream.requests[-1]["json"]["system"] == "Be brief."
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens > 0

    called = sdk.responses.create(model="claude", input="Weather?", tools=[WEATHER])
    [call] = called.output
    assert call.type == "function_call" and call.name == "get_weather"
    answered = sdk.responses.create(model="claude", previous_response_id=called.id, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "21 degrees"}])
    assert answered.output_text == "Fake reply from claude: Weather?"
    messages = upstream.requests[-1]["json"]["messages"]
    assert messages[1]["content"][0] == {"type": "tool_use", "id": call.call_id, "name": "get_weather", "input": {}}
    assert messages[2]["content"][0]["type"] == "tool_result" and messages[2]["content"][0]["tool_use_id"] == call.call_id
