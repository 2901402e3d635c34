"""plugins/anthropic/json_mode.py: OpenAI's ``response_format`` on an Anthropic provider, as a forced
tool whose input comes back as the answer's JSON text."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from modelbroker import ChatRequest
from modelbroker.plugins.anthropic.convert import StreamState, parse_message, request_body
from modelbroker.plugins.anthropic.json_mode import NAME, SPARE_NAME, force, json_tool

PERSON = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}},
    "kind": {"enum": ["cat", "dog"]}}, "required": ["name", "age", "tags", "kind"], "additionalProperties": False}
AS_SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "description": "One person.", "schema": PERSON,
                                                    "strict": True}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
HELLO = [{"role": "user", "content": "describe someone"}]


def test_json_tool_for_each_response_format():
    tool = json_tool({"response_format": AS_SCHEMA})
    assert (tool.name, tool.wrapped) == (NAME, False)
    assert tool.definition == {"name": NAME, "input_schema": PERSON, "description":
                               "Give your whole answer by calling this tool: its input is the answer, as JSON "
                               "(person). One person."}
    assert json_tool({"response_format": {"type": "json_object"}}).definition["input_schema"] == {"type": "object"}
    assert json_tool({"response_format": {"type": "text"}}) is None and json_tool({}) is None
    taken = json_tool({"response_format": {"type": "json_object"}, "tools": [
        {"type": "function", "function": {"name": NAME}}]})
    assert taken.name == SPARE_NAME


def test_a_schema_whose_root_is_not_an_object_is_wrapped_and_unwrapped():
    listing = {"type": "json_schema", "json_schema": {"name": "l", "schema": {"type": "array", "items": {}}}}
    tool = json_tool({"response_format": listing})
    assert tool.wrapped and tool.definition["input_schema"] == {
        "type": "object", "properties": {"value": {"type": "array", "items": {}}}, "required": ["value"]}
    assert tool.text({"value": [1, 2]}) == "[1,2]"


@pytest.mark.parametrize("choice, expected", [
    (None, {"type": "any"}),
    ({"type": "auto"}, {"type": "any"}),
    ({"type": "auto", "disable_parallel_tool_use": True}, {"type": "any", "disable_parallel_tool_use": True}),
    ({"type": "none"}, {"type": "tool", "name": NAME}),
    ({"type": "tool", "name": "get_weather"}, {"type": "tool", "name": "get_weather"}),
])
def test_force_with_tools_of_the_clients(choice, expected):
    body = {"tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}
    if choice is not None:
        body["tool_choice"] = choice
    tool = json_tool({"response_format": {"type": "json_object"}})
    force(body, tool)
    assert [t["name"] for t in body["tools"]] == ["get_weather", NAME] and body["tool_choice"] == expected


def test_request_body_forces_the_tool():
    body = request_body("m", ChatRequest(messages=HELLO, extra={"response_format": AS_SCHEMA}), {})
    assert body["tools"] == [json_tool({"response_format": AS_SCHEMA}).definition]
    assert body["tool_choice"] == {"type": "tool", "name": NAME} and "response_format" not in body


def test_parse_message_gives_the_tools_input_as_text():
    tool = json_tool({"response_format": AS_SCHEMA, "tools": TOOLS})
    data = {"content": [{"type": "tool_use", "id": "t", "name": NAME, "input": {"name": "Ada", "age": 36}}],
            "stop_reason": "tool_use"}
    completion = parse_message(data, "m", tool)
    assert json.loads(completion.text) == {"name": "Ada", "age": 36}
    choice = completion.raw["choices"][0]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    data["content"].append({"type": "tool_use", "id": "t2", "name": "get_weather", "input": {}})
    choice = parse_message(data, "m", tool).raw["choices"][0]  # a call of the client's own stays one
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["tool_calls"][0]["id"] == "t2"


@pytest.mark.parametrize("schema, pieces, expected", [
    ({"type": "object"}, ['{"na', 'me": "Ada"}'], ['{"na', 'me": "Ada"}']),
    ({"type": "array"}, ['{"value": [1', ", 2]}"], ["[1,2]"]),
], ids=["streamed-as-it-comes", "wrapped-whole-at-its-end"])
def test_stream_state_gives_the_tools_input_as_text(schema, pieces, expected):
    tool = json_tool({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    state = StreamState("m", None, tool)
    events = [{"type": "message_start", "message": {"id": "msg", "usage": {"input_tokens": 2}}},
              {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t",
                                                                            "name": NAME, "input": {}}},
              *({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": p}}
                for p in ["", *pieces]),
              {"type": "content_block_stop", "index": 0},
              {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}}]
    chunks = [chunk for event in events for chunk in state.feed(event)]
    assert [c.text for c in chunks if c.text] == expected
    assert all(c.has_content for c in chunks if c.text)
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert not any("tool_calls" in c.raw["choices"][0]["delta"] for c in chunks if c.raw["choices"])


@pytest.fixture
def claude_only(gateway, provider):
    return gateway({"providers": [provider("claude", model="claude-t", type="anthropic")]})


def sdk(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=10)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_json_schema_through_chat_completions(claude_only, upstream, stream):
    client = sdk(claude_only)
    if stream:
        pieces = list(client.chat.completions.create(model="auto", messages=HELLO, response_format=AS_SCHEMA,
                                                     stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
        finish = [c.choices[0].finish_reason for c in pieces if c.choices and c.choices[0].finish_reason]
        assert len([c for c in pieces if c.choices and c.choices[0].delta.content]) == 3  # streamed in pieces
    else:
        answer = client.chat.completions.create(model="auto", messages=HELLO, response_format=AS_SCHEMA)
        text, finish = answer.choices[0].message.content, [answer.choices[0].finish_reason]
        assert answer.choices[0].message.tool_calls is None
    value = json.loads(text)
    jsonschema.validate(value, PERSON)
    assert value == {"name": "fake", "age": 1, "tags": ["fake"], "kind": "cat"} and finish == ["stop"]
    sent = upstream.requests[-1]["json"]
    assert sent["tool_choice"] == {"type": "tool", "name": NAME} and sent["tools"][0]["input_schema"] == PERSON


def test_json_object_through_chat_completions(claude_only):
    answer = sdk(claude_only).chat.completions.create(model="auto", messages=HELLO,
                                                      response_format={"type": "json_object"})
    assert json.loads(answer.choices[0].message.content) == {}
    assert answer.choices[0].finish_reason == "stop"
