"""One request, several providers: a failing Anthropic provider falls back to an OpenAI one (the
native body was never its only form), and every attempt is recorded under surface ``messages``."""

from __future__ import annotations

import sqlite3

import pytest

from modelbroker import Completion, Usage, hookimpl

from .conftest import reply_of, sdk

HELLO = [{"role": "user", "content": "hello big world"}]


@pytest.mark.parametrize("behavior", [
    {"kind": "status", "status": 500},
    {"kind": "status", "status": 529},
    {"kind": "malformed"},
    {"kind": "stream_error_event", "cut_after": 0},
], ids=["500", "529", "malformed", "error-event-before-content"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_failing_anthropic_provider_falls_back_to_openai(messages_gateway, provider, upstream, behavior, stream):
    upstream.set_behavior("claude-t", behavior)
    gw = messages_gateway("anthropic", provider("gpt-t", priority=2))
    client = sdk(gw)
    if stream:
        with client.messages.stream(model="auto", max_tokens=20, messages=HELLO, tools=[]) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(model="auto", max_tokens=20, messages=HELLO)
    assert message.content[0].text == reply_of("openai", "hello big world")
    assert message.stop_reason == "end_turn" and message.model == "gpt-t"
    assert [r["path"] for r in upstream.requests][-2:] == ["/v1/messages", "/v1/chat/completions"]
    assert upstream.requests[-1]["json"]["messages"] == HELLO


def test_fallback_answers_in_one_request_and_records_surface_messages(messages_gateway, provider, upstream, tmp_path):
    """The ledger and app.log name the surface, the client (``metadata.user_id``) and each attempt."""
    upstream.set_behavior("claude-t", {"kind": "status", "status": 503})
    db = tmp_path / "ledger.db"
    gw = messages_gateway("anthropic", provider("gpt-t", priority=2), settings={"database_url": f"sqlite:///{db}"})
    response = gw.post("/v1/messages", json={"model": "auto", "max_tokens": 20, "messages": HELLO,
                                             "metadata": {"user_id": "team-a"}})
    assert response.status_code == 200 and response.headers["x-modelbroker-attempts"] == "2"
    assert response.headers["x-modelbroker-provider"] == "gpt-t/gpt-t"
    refused = gw.post("/v1/messages", json={"model": "auto", "messages": HELLO})
    assert refused.status_code == 400

    lines = gw.log_lines()
    assert [(line["surface"], line["provider"], line["success"]) for line in lines if line["attempt"]] == [
        ("messages", "anthropic", False), ("messages", "gpt-t", True)]
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT surface, outcome, provider, client FROM attempts ORDER BY time, attempt").fetchall()
    assert rows == [("messages", "failed", "anthropic", "team-a"), ("messages", "ok", "gpt-t", "team-a"),
                    ("messages", "rejected", None, None)]


def test_an_anthropic_upstream_answering_whole_to_a_stream(messages_gateway, upstream):
    """A proxy that ignores ``stream: true``: its message is told as the events of a stream."""
    message = {"id": "msg_whole", "type": "message", "role": "assistant", "model": "claude-t",
               "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                           {"type": "text", "text": "all at once", "citations": None},
                           {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
               "stop_reason": "tool_use", "stop_sequence": None,
               "usage": {"input_tokens": 4, "output_tokens": 6, "cache_read_input_tokens": 2,
                         "cache_creation_input_tokens": 0}}
    upstream.set_behavior("claude-t", {"kind": "status", "status": 200, "body": message})
    gw = messages_gateway("anthropic")
    with sdk(gw).messages.stream(model="auto", max_tokens=20, messages=HELLO) as stream:
        final = stream.get_final_message()
    expected = {**message, "content": [message["content"][0], {"type": "text", "text": "all at once"},
                                       message["content"][2]]}
    del expected["stop_sequence"]  # None, left out by exclude_none
    assert final.model_dump(exclude_none=True) == expected


class WholeAnswers:
    """An adapter that cannot stream: it answers whole, and the router makes that a one-chunk stream."""

    async def call_provider(self, provider, request):
        raw = {"id": "c1", "object": "chat.completion", "created": 0, "model": provider.model, "choices": [
            {"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "let me look",
                "tool_calls": [{"id": "call_9", "type": "function",
                                "function": {"name": "lookup", "arguments": '{"q": "cats"}'}}]}}]}
        return Completion(text="let me look", model=provider.model, usage=Usage(3, 4, 7), raw=raw)


class WholePlugin:
    @hookimpl
    def register_adapters(self, register):
        register("whole", WholeAnswers)


def test_an_adapter_answering_whole_to_a_stream(gateway, provider):
    """The router's single_chunk_stream: one chat chunk with text and a tool call, told as events."""
    gw = gateway({"providers": [provider("w", type="whole")]}, plugins={"whole": WholePlugin()})
    with sdk(gw).messages.stream(model="auto", max_tokens=20, messages=HELLO) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["text", "tool_use"]
    assert final.content[0].text == "let me look"
    assert (final.content[1].id, final.content[1].name, final.content[1].input) == ("toolu_call_9", "lookup",
                                                                                    {"q": "cats"})
    assert final.stop_reason == "tool_use" and (final.usage.input_tokens, final.usage.output_tokens) == (3, 4)
