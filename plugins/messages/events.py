"""A streamed answer as Anthropic's server-sent events.

An Anthropic upstream's events arrive whole (``StreamChunk.native``) and are relayed as
they came. Chat chunks from any other upstream are told as the events Anthropic would
have sent: ``message_start``, a ``ping``, then per content block ``content_block_start``,
its ``content_block_delta``s (``text_delta``, ``input_json_delta``) and
``content_block_stop``, then ``message_delta`` (stop reason, usage) and ``message_stop``.
A stream the upstream broke after content was sent ends with an ``error`` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from modelbroker import ChatRequest, Completion, Routed, StreamChunk, StreamEnd, estimate_tokens, sse_event
from modelbroker.plugins.messages.convert import anthropic_usage, stop_reason, tool_id
from modelbroker.plugins.messages.errors import stream_error_event


async def stream_events(request: ChatRequest, routed: Routed, message_id: str) -> AsyncIterator[bytes]:
    """The events of ``routed``'s stream, relayed or converted, chunk by chunk."""
    writer: EventWriter | None = None
    async with aclosing(routed.relay()) as items:
        async for item in items:
            if isinstance(item, StreamEnd):
                if item.error is not None:
                    yield stream_error_event(item.error)
                elif writer is not None:
                    yield writer.end(item.completion)
                return
            if item.native is not None:
                yield sse_event(item.native, event=item.native.get("type"))
                continue
            if writer is None:
                writer = EventWriter(message_id, item.model or routed.provider.model)
                yield writer.start(estimate_tokens(request.prompt_text()))
            if events := writer.chunk(item):
                yield events


class EventWriter:
    """Tells one stream of chat chunks as Anthropic's events, remembering which content block
    is open, which block each tool call became, and the stop reason."""

    def __init__(self, message_id: str, model: str) -> None:
        self.message_id = message_id
        self.model = model
        self.blocks = 0  # content blocks started so far
        self.open: int | None = None  # the index of the open block
        self.text_open = False
        self.calls: dict[int, int] = {}  # chat tool_calls index -> content block index
        self.stop_reason = "end_turn"

    def start(self, input_tokens: int) -> bytes:
        """``message_start`` (input tokens estimated until the upstream reports them) and a ``ping``."""
        message = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": input_tokens, "output_tokens": 0}}
        return (sse_event({"type": "message_start", "message": message}, event="message_start")
                + sse_event({"type": "ping"}, event="ping"))

    def chunk(self, chunk: StreamChunk) -> bytes:
        """The events for one chat chunk (none for a usage chunk)."""
        out = b""
        for choice in chunk.raw.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if isinstance(text, str) and text:
                out += self._text(text)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    out += self._tool_call(call)
            if choice.get("finish_reason"):
                self.stop_reason = stop_reason(choice["finish_reason"])
        return out

    def end(self, completion: Completion) -> bytes:
        """The open block closed, then ``message_delta`` with the stop reason and usage, ``message_stop``."""
        delta = {"type": "message_delta", "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                 "usage": anthropic_usage(completion.usage)}
        return (self._close() + sse_event(delta, event="message_delta")
                + sse_event({"type": "message_stop"}, event="message_stop"))

    def _text(self, text: str) -> bytes:
        out = b""
        if not self.text_open:
            out = self._open({"type": "text", "text": ""})
            self.text_open = True
        return out + self._delta(self.open, {"type": "text_delta", "text": text})

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        """A tool call's first piece opens its ``tool_use`` block; its arguments are ``input_json_delta``s."""
        number = call.get("index") if isinstance(call.get("index"), int) else 0
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        out = b""
        if number not in self.calls:
            out = self._open({"type": "tool_use", "id": tool_id(call.get("id")),
                              "name": str(function.get("name") or ""), "input": {}})
            self.calls[number] = self.open
        pieces = function.get("arguments")
        if isinstance(pieces, str) and pieces:
            out += self._delta(self.calls[number], {"type": "input_json_delta", "partial_json": pieces})
        return out

    def _open(self, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.open = self.blocks
        self.blocks += 1
        return out + sse_event({"type": "content_block_start", "index": self.open, "content_block": block},
                               event="content_block_start")

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        index, self.open, self.text_open = self.open, None, False
        return sse_event({"type": "content_block_stop", "index": index}, event="content_block_stop")

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> bytes:
        return sse_event({"type": "content_block_delta", "index": index, "delta": delta},
                         event="content_block_delta")
