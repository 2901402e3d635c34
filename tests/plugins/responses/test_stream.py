"""POST /v1/responses with ``stream: true``: the documented events in order, numbered from 0,
read by the openai SDK's raw stream and its ``responses.stream`` helper; a cut stream's end."""

from __future__ import annotations

import orjson
import pytest

from modelbroker import ProviderError
from modelbroker.plugins.responses.events import ResponseEvents
from modelbroker.plugins.responses.request import ResponseCall

from .conftest import sse_events
from .test_requests import WEATHER

TEXT_EVENTS = [
    "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
    "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
]


def test_a_streamed_answer_gives_the_documented_events(start, provider, upstream, client):
    gw = start(provider("a"))
    sdk = client(gw)
    events = list(sdk.responses.create(model="a", input="hello stream", stream=True))
    assert [event.type for event in events] == TEXT_EVENTS
    assert [event.sequence_number for event in events] == list(range(len(events)))
    created, completed = events[0].response, events[-1].response
    assert created.status == "in_progress" and created.output == [] and created.usage is None
    assert created.id == completed.id and completed.status == "completed"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == completed.output_text == "Fake reply from a: hello stream"
    added, done = events[2], events[-2]
    assert added.item.id == done.item.id == completed.output[0].id and added.output_index == done.output_index == 0
    assert done.item.status == "completed" and events[7].text == completed.output_text
    assert completed.usage.total_tokens == completed.usage.input_tokens + completed.usage.output_tokens > 0
    assert upstream.requests[-1]["json"]["stream"] is True

    stored = sdk.responses.retrieve(completed.id)  # kept as it ended
    assert stored.output_text == completed.output_text and stored.usage == completed.usage


def test_the_raw_stream_names_each_event(start, provider, upstream):
    """``event: <type>`` before each ``data:``, for clients that dispatch on the event name."""
    gw = start(provider("a"))
    answer = gw.post("/v1/responses", json={"model": "a", "input": "hi", "stream": True})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = sse_events(answer.text)
    assert [name for name, _ in events] == [data["type"] for _, data in events] == TEXT_EVENTS


def test_the_stream_helper_gives_the_final_response(start, provider, upstream, client):
    gw = start(provider("a"))
    with client(gw).responses.stream(model="a", input="helper please") as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == final.output_text == "Fake reply from a: helper please"
    assert final.status == "completed"


def test_a_streamed_tool_call(start, provider, upstream, client):
    gw = start(provider("a"))
    events = list(client(gw).responses.create(model="a", input="Weather?", tools=[WEATHER], stream=True))
    assert [event.type for event in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    added, arguments_done, final = events[2], events[4], events[-1].response
    assert added.item.type == "function_call" and added.item.name == "get_weather" and added.item.status == "in_progress"
    assert arguments_done.name == "get_weather" and arguments_done.arguments == "{}"
    [call] = final.output
    assert (call.call_id, call.name, call.arguments, call.status) == ("call_fake_1", "get_weather", "{}", "completed")


def test_a_stream_cut_after_content_ends_with_response_failed(start, provider, upstream, client):
    upstream.set_behavior("a", {"kind": "stream_cut", "chunks": 4, "cut_after": 2})
    gw = start(provider("a"))
    sdk = client(gw)
    events = list(sdk.responses.create(model="a", input="hello there friend", stream=True))
    assert [event.type for event in events][-1] == "response.failed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error"
    assert "mid-stream" in failed.error.message
    sent = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert sent and failed.output[0].content[0].text == sent and failed.output[0].status == "incomplete"
    assert sdk.responses.retrieve(failed.id).status == "failed"

    with sdk.responses.stream(model="a", input="hello there friend") as stream:
        with pytest.raises(RuntimeError, match="response.completed"):  # the helper says so; it never hangs
            stream.get_final_response()
    lines = [line for line in gw.log_lines() if line["attempt"] > 0]
    assert {line["surface"] for line in lines} == {"responses"} and lines[0]["error_kind"] == "partial"


def test_an_error_event_mid_stream_ends_with_response_failed(start, provider, upstream, client):
    upstream.set_behavior("a", {"kind": "stream_error_event", "chunks": 4, "cut_after": 1})
    gw = start(provider("a"))
    events = list(client(gw).responses.create(model="a", input="hello there", stream=True))
    assert events[-1].type == "response.failed" and events[-1].response.error.code == "server_error"


def test_a_stream_that_fails_before_content_falls_back(start, provider, upstream, client):
    upstream.set_behavior("down", {"kind": "stream_cut", "cut_after": 0})
    gw = start(provider("down", priority=1), provider("up", priority=2))
    events = list(client(gw).responses.create(input="hello", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Fake reply from up: hello"


def chunk(delta: dict, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_events_for_text_after_tool_calls_a_refusal_and_a_length_cut():
    """Chat chunks the fake upstream never sends, fed to the event writer directly."""
    call = ResponseCall("resp_x", 1, [], {}, True, None, 60.0)
    events = ResponseEvents(call, "m")
    events.opening()
    events.chunk(chunk({"content": "Let me check."}))
    events.chunk(chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": '{"a"'}}]}))
    events.chunk(chunk({"tool_calls": [{"index": 0, "id": "call_late", "function": {"arguments": ": 1}"}}]}))
    events.chunk(chunk({"content": "More text."}))
    events.chunk(chunk({"refusal": "I cannot."}, "length"))
    closing, response_json = events.finished(None)
    response = orjson.loads(response_json)
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    first, tool, second = response["output"]
    assert first["content"] == [{"type": "output_text", "text": "Let me check.", "annotations": [], "logprobs": []}]
    assert (tool["call_id"], tool["name"], tool["arguments"]) == ("call_late", "f", '{"a": 1}')
    assert second["id"] != first["id"] and second["status"] == "incomplete"
    assert [part["type"] for part in second["content"]] == ["output_text", "refusal"]
    assert sse_events(b"".join(closing).decode())[-1][0] == "response.incomplete"

    failing = ResponseEvents(call, "m")
    failing.chunk(chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{"}}]}))
    _, failed_json = failing.failed(ProviderError("partial", "cut"))
    failed = orjson.loads(failed_json)
    assert failed["status"] == "failed" and failed["output"][0]["status"] == "incomplete"
    assert failed["output"][0]["call_id"].startswith("call_")


def test_a_closed_text_and_arguments_read_the_same_in_every_event_that_repeats_them():
    """Each is serialized once when closed and spliced into the done events and the Response:
    escapes (quotes, a newline, a line separator, a backslash) come out as they went in."""
    text = 'He said "hi"\nthen\u2028left \\ ' + "é" * 500
    arguments = '{"q": "a \\"quoted\\" word\\n"}'
    events = ResponseEvents(ResponseCall("resp_x", 1, [], {}, True, None, 60.0), "m")
    sent = events.opening()
    sent += events.chunk(chunk({"content": text[:300]})) + events.chunk(chunk({"content": text[300:]}))
    sent += events.chunk(chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f",
                                                                                         "arguments": arguments}}]}))
    closing, response_json = events.finished(None)
    by_name = dict(sse_events((sent + b"".join(closing)).decode()))
    assert by_name["response.output_text.done"]["text"] == text
    assert by_name["response.content_part.done"]["part"]["text"] == text
    assert by_name["response.function_call_arguments.done"]["arguments"] == arguments
    response = orjson.loads(response_json)
    assert by_name["response.completed"]["response"] == response
    message, call = response["output"]
    assert message["content"][0]["text"] == text and call["arguments"] == arguments
