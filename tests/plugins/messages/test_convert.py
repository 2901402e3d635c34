"""plugins/messages/convert.py and events.py on plain dicts: a Messages request as chat messages and
fields, a chat answer as a message, chat chunks as Anthropic's events."""

from __future__ import annotations

import json

import pytest

from modelbroker import APIError, Completion, StreamChunk, Usage
from modelbroker.plugins.messages.convert import chat_extra, chat_messages, message_body, tool_id
from modelbroker.plugins.messages.events import EventWriter


def test_system_blocks_and_strings():
    assert chat_messages({"system": "be brief", "messages": []}) == [{"role": "system", "content": "be brief"}]
    blocks = [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "b"}]
    assert chat_messages({"system": blocks, "messages": []}) == [{"role": "system", "content": "a\n\nb"}]
    assert chat_messages({"system": "", "messages": []}) == []


def test_tool_results_come_first_as_tool_messages():
    messages = chat_messages({"messages": [
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": "x"}},
            {"type": "tool_use", "id": "toolu_2", "name": "shot", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "found"}]},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True, "content": [
                {"type": "text", "text": "no camera"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]},
            {"type": "text", "text": "go on"}]}]})
    assert messages == [
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "look", "arguments": '{"q":"x"}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "shot", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "found"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no camera"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                                     {"type": "text", "text": "go on"}]}]


def test_blocks_chat_has_no_place_for_are_left_out():
    messages = chat_messages({"messages": [
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]},
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
            {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
             "title": "a.pdf"},
            {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "inline"}]}},
            {"type": "search_result", "source": "s", "title": "t", "content": []}]}]})
    assert messages == [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
        {"type": "text", "text": "inline"}]}]


def test_chat_extra():
    tools = [{"name": "look", "description": "Look up", "input_schema": {"type": "object"},
              "cache_control": {"type": "ephemeral"}},
             {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]
    extra = chat_extra({"tools": tools, "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
                        "stop_sequences": ["END"], "top_p": 0.5, "top_k": 3, "metadata": {"user_id": "u"}})
    assert extra == {"tools": [{"type": "function", "function": {
        "name": "look", "parameters": {"type": "object"}, "description": "Look up"}}],
        "tool_choice": "required", "parallel_tool_calls": False, "stop": ["END"], "top_p": 0.5, "user": "u"}
    named = chat_extra({"tools": tools[:1], "tool_choice": {"type": "tool", "name": "look"}})
    assert named["tool_choice"] == {"type": "function", "function": {"name": "look"}}
    assert chat_extra({"tools": tools[1:], "tool_choice": {"type": "auto"}}) == {}  # server tools only: no tools


def test_a_bad_block_names_where_it_is():
    with pytest.raises(APIError) as caught:
        chat_messages({"messages": [{"role": "user", "content": "ok"},
                                    {"role": "assistant", "content": [{"type": "tool_use", "name": "f"}]}]})
    assert caught.value.status == 400 and caught.value.param == "messages[1].content[0]"


def answer(message: dict, finish: str = "stop", usage: Usage | None = None) -> Completion:
    raw = {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    return Completion(text=message.get("content") or "", model="gpt-t", usage=usage or Usage(10, 3, 13), raw=raw)


def test_message_body_from_a_chat_answer():
    completion = answer({"role": "assistant", "content": "Let me look.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": '{"q": "x"}'}},
        {"id": "toolu_2", "type": "function", "function": {"name": "shot", "arguments": "not json"}}]},
        "tool_calls", Usage(10, 3, 13, cached_tokens=6))
    assert message_body(completion, "msg_1") == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "gpt-t", "stop_reason": "tool_use",
        "stop_sequence": None, "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_call_1", "name": "look", "input": {"q": "x"}},
            {"type": "tool_use", "id": "toolu_2", "name": "shot", "input": {}}],
        "usage": {"input_tokens": 4, "output_tokens": 3, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 6}}


def test_message_body_without_a_chat_answer_and_with_a_refusal():
    whole = Completion(text="just text", model="m", usage=Usage(1, 2, 3))
    assert message_body(whole, "msg_2")["content"] == [{"type": "text", "text": "just text"}]
    refused = message_body(answer({"role": "assistant", "content": None, "refusal": "I can't"}, "content_filter"), "m")
    assert refused["content"] == [{"type": "text", "text": "I can't"}] and refused["stop_reason"] == "refusal"


def test_tool_ids():
    assert tool_id("call_1") == "toolu_call_1" and tool_id("toolu_9") == "toolu_9"
    assert tool_id(None).startswith("toolu_") and tool_id("") != tool_id("")


def events_of(data: bytes) -> list[tuple[str, dict]]:
    found = []
    for block in data.decode().strip().split("\n\n"):
        name, payload = block.split("\n")
        assert name == f"event: {json.loads(payload[6:])['type']}"
        found.append((name[7:], json.loads(payload[6:])))
    return found


def chunk(delta: dict, finish: str | None = None) -> StreamChunk:
    return StreamChunk(raw={"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_event_writer_text_then_tool_calls():
    writer = EventWriter("msg_1", "gpt-t")
    out = writer.start(12)
    for piece in [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"}), chunk({"content": "!"}),
                  chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": ""}}]}),
                  chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
                  chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
                  chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "{}"}}]}),
                  chunk({}, "tool_calls"), StreamChunk(raw={"choices": [], "usage": {}})]:
        out += writer.chunk(piece)
    out += writer.end(Completion(text="Hi!", model="gpt-t", usage=Usage(12, 5, 17)))
    events = events_of(out)
    assert [name for name, _ in events] == [
        "message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    assert events[0][1]["message"]["usage"] == {"input_tokens": 12, "output_tokens": 0}
    assert events[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert events[6][1]["content_block"] == {"type": "tool_use", "id": "toolu_call_a", "name": "f", "input": {}}
    assert [e["delta"]["partial_json"] for _, e in events[7:9]] == ['{"x":', "1}"]
    assert events[10][1]["index"] == 2 and events[11][1]["delta"]["partial_json"] == "{}"
    assert events[13][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[13][1]["usage"]["output_tokens"] == 5
