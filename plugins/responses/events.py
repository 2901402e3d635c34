"""A streamed Response: chat chunks in, the Responses API's server-sent events out.

The events, as OpenAI's API sends them, each with ``type`` and a ``sequence_number``
counting from 0::

    response.created, response.in_progress
    per output item:  response.output_item.added
      a message:        response.content_part.added, response.output_text.delta...,
                        response.output_text.done, response.content_part.done
      a function call:  response.function_call_arguments.delta..., ...arguments.done
                        response.output_item.done
    response.completed | response.incomplete (max_output_tokens) | response.failed

The events are written as bytes as they are made. The frequent ones, the text deltas, from
a template made once per content part; the response object, in ``response.created`` and
``response.in_progress`` and again at the end, serialized once for each (and the last
one's bytes are what the store keeps). A message item and its content parts have a fixed
shape, so their events are templates too, filled with the item's id and the part's text;
the text of each content part and the arguments of each function call are serialized
once, when closed, and put as they are into the events and the Response that repeat them
(a closed message stays in ``output`` as its JSON, an ``orjson.Fragment``).

A stream cut after content ends with ``response.failed``, the partial output in its
response and ``error.code`` ``server_error``: the event OpenAI ends a failed response
with, on which the SDKs' stream helpers report the failure (``get_final_response()``
raises) and Codex stops the turn with the message.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelbroker import ProviderError, Usage
from modelbroker.plugins.responses.answer import (
    INCOMPLETE,
    MESSAGE_JSON,
    PART_JSON,
    function_call_item,
    message_id,
    response_json,
)
from modelbroker.plugins.responses.request import ResponseCall

#: Per event type, its head (``head``), made once.
HEADS: dict[str, bytes] = {}


def head(kind: str) -> bytes:
    """An event's bytes up to its sequence number: ``event: kind``, then its JSON's start."""
    made = HEADS.get(kind)
    if made is None:
        made = HEADS[kind] = f'event: {kind}\ndata: {{"type":"{kind}","sequence_number":'.encode()
    return made


def event_format(kind: str, fields: bytes) -> bytes:
    """The bytes format of an event of type ``kind``: its sequence number (``%d``), then
    ``fields``, its JSON fields after it (a format too)."""
    return head(kind).replace(b"%", b"%%") + b"%d," + fields + b"}\n\n"


class EventFormats(dict):
    """Event type -> the format of its events with their fields as one argument (JSON
    already), made the first time the type is written."""

    def __missing__(self, kind: str) -> bytes:
        made = self[kind] = event_format(kind, b"%b")
        return made


FORMATS = EventFormats()

# The events whose shape is fixed, each a format made once. A content part's position
# fields (``item_id``, ``output_index``, ``content_index``) are made when it opens and
# passed as ``at``.

#: ``response.created`` and ``response.in_progress``, which hold the same Response: the
#: stream's first two events (sequence numbers 0 and 1).
OPENING = event_format("response.created", b'"response":%b') + event_format("response.in_progress", b'"response":%b')
#: A message item added (its position, then its id's JSON): a message is added before any
#: content.
MESSAGE_ADDED = event_format("response.output_item.added", b'"output_index":%d,"item":{"id":%b,"type":"message",'
                                                           b'"status":"in_progress","role":"assistant","content":[]}')
#: A content part added, empty (after ``at``), per kind of part.
PART_ADDED = {
    "output_text": event_format("response.content_part.added",
                                b'%b,"part":{"type":"output_text","text":"","annotations":[],"logprobs":[]}'),
    "refusal": event_format("response.content_part.added", b'%b,"part":{"type":"refusal","refusal":""}'),
}
#: Each kind of delta event's format, up to ``at``, and from there on: its delta's JSON,
#: and its end.
DELTA_STARTS = {kind: head(f"response.{kind}.delta").replace(b"%", b"%%") + b"%d,"
                for kind in ("output_text", "refusal")}
DELTA_ENDS = {"output_text": b',"delta":%s,"logprobs":[]}\n\n', "refusal": b',"delta":%s}\n\n'}
#: A content part closed: its text's done event (``at``, the text's JSON), then
#: ``response.content_part.done`` (``at``, the part's JSON), per kind of part.
PART_DONE = event_format("response.content_part.done", b'%b,"part":%b')
PART_CLOSED = {
    "output_text": event_format("response.output_text.done", b'%b,"text":%b,"logprobs":[]') + PART_DONE,
    "refusal": event_format("response.refusal.done", b'%b,"refusal":%b') + PART_DONE,
}
#: An item closed: its position, then its JSON.
ITEM_DONE = event_format("response.output_item.done", b'"output_index":%d,"item":%b')
#: The event that ends a stream, per the Response's status.
LAST = {status: event_format(f"response.{status}", b'"response":%b')
        for status in ("completed", "incomplete", "failed")}


class ResponseEvents:
    """The events of one streamed Response, in order; ``output`` is what it has said so far."""

    def __init__(self, call: ResponseCall, model: str) -> None:
        self.call = call
        self.model = model
        self.sequence = 0  # the next event's sequence number
        #: The output items: a message as its JSON once closed (None in its place while it
        #: is open), a function call as a dict.
        self.output: list[dict[str, Any] | orjson.Fragment | None] = []
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> its open function_call item
        self.positions: dict[str, int] = {}  # a function call's item id -> output_index
        self.finish_reason: str | None = None
        self.messages = 0  # message items so far
        #: The open message's output_index (None: no message is open), and its id as JSON.
        self.message_at: int | None = None
        self.message_id = b""
        #: The open message's content parts: each one's kind (``output_text`` or
        #: ``refusal``), position fields (``at``), and its text so far in pieces, joined
        #: when the message is closed (not once a delta).
        self.parts: list[tuple[str, bytes, list[str]]] = []
        #: The open content part's kind, and its pieces (the last part's).
        self.part_kind: str | None = None
        self.pieces: list[str] = []
        #: The bytes format of the open content part's delta events (sequence number, then
        #: the delta's JSON), made when the part opens (``_text``).
        self.delta_format = b""

    def event(self, kind: str, payload: dict[str, Any]) -> bytes:
        """One event: ``payload`` after its ``type`` and ``sequence_number``."""
        sequence = self.sequence
        self.sequence = sequence + 1
        return FORMATS[kind] % (sequence, orjson.dumps(payload)[1:-1])

    def opening(self) -> bytes:
        """The first two events (the stream's first bytes)."""
        response = response_json(self.call, self.model, "in_progress", b"[]", None)
        self.sequence = 2
        return OPENING % (0, response, 1, response)

    # --- chunks -------------------------------------------------------------------------

    def chunk(self, raw: dict[str, Any]) -> bytes:
        """The events for one ``chat.completion.chunk``, as bytes (none: empty)."""
        choices = raw.get("choices")
        if not choices or not isinstance(choices[0], dict):
            return b""  # the usage chunk: the total comes with the end
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        if not delta:
            return b""
        text = delta.get("content")
        if text and self.part_kind == "output_text" and len(delta) == 1:  # more of the open text: the frequent case
            return self._delta(text)
        refusal, calls = delta.get("refusal"), delta.get("tool_calls")
        if not (text or refusal or calls):
            return b""  # the role alone, or empty content
        events: list[bytes] = []
        if text:
            if self.part_kind == "output_text":
                events.append(self._delta(text))
            else:
                self._text(text, "output_text", events)
        if refusal:
            self._text(refusal, "refusal", events)
        for call in calls or ():
            if isinstance(call, dict):
                self._tool_call(call, events)
        return b"".join(events)

    def _delta(self, text: str) -> bytes:
        """A delta event of the open content part, from its format."""
        self.pieces.append(text)
        sequence = self.sequence
        self.sequence = sequence + 1
        return self.delta_format % (sequence, orjson.dumps(text))

    def _text(self, text: str, kind: str, events: list[bytes]) -> None:
        """A piece of the answer's text (``output_text``) or of a refusal (``refusal``)."""
        if self.message_at is None:
            self.message_at = position = len(self.output)
            self.output.append(None)
            self.message_id = orjson.dumps(message_id(self.call.response_id, self.messages))
            self.messages += 1
            self.parts = []
            sequence = self.sequence
            self.sequence = sequence + 1
            events.append(MESSAGE_ADDED % (sequence, position, self.message_id))
        if self.part_kind != kind:
            at = b'"item_id":%b,"output_index":%d,"content_index":%d' % (self.message_id, self.message_at,
                                                                           len(self.parts))
            self.part_kind, self.pieces = kind, []
            self.parts.append((kind, at, self.pieces))
            sequence = self.sequence
            self.sequence = sequence + 1
            events.append(PART_ADDED[kind] % (sequence, at))
            self.delta_format = DELTA_STARTS[kind] + at.replace(b"%", b"%%") + DELTA_ENDS[kind]
        if text:
            events.append(self._delta(text))

    def _tool_call(self, call: dict[str, Any], events: list[bytes]) -> None:
        index = call.get("index", 0)
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        item = self.calls.get(index)
        if item is None:
            self._close_message(events, "completed")  # the output's order: the text, then the calls
            item = function_call_item(self.call.response_id, len(self.calls), call.get("id"), function.get("name"),
                                      "", "in_progress")
            if not call.get("id"):
                item["call_id"] = ""  # it may come in a later piece; else one is made at the end
            self.calls[index] = item
            self._add_item(item, events)
        else:  # pieces of the id or name, from upstreams that split them (OpenAI sends them whole)
            if not item["call_id"] and isinstance(call.get("id"), str):
                item["call_id"] = call["id"]
            if not item["name"] and isinstance(function.get("name"), str):
                item["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            events.append(self.event("response.function_call_arguments.delta", {**self._at(item), "delta": arguments}))

    def _add_item(self, item: dict[str, Any], events: list[bytes]) -> None:
        """Each event is encoded as it is made, so an item may change after it was sent."""
        position = self.positions[item["id"]] = len(self.output)
        self.output.append(item)
        events.append(self.event("response.output_item.added", {"output_index": position, "item": item}))

    def _at(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": self.positions[item["id"]]}

    # --- the end ------------------------------------------------------------------------

    def _close_message(self, events: list[bytes] | None, status: str) -> None:
        """Close the open message, if any: its JSON takes its place in the output, and its
        done events are added to ``events`` (None: none are sent, as when a stream fails)."""
        position = self.message_at
        if position is None:
            return
        self.message_at, self.part_kind = None, None
        sequence = self.sequence
        parts = []
        for kind, at, pieces in self.parts:
            # The text, serialized once: the events, the item and the Response take it as it is.
            text = orjson.dumps("".join(pieces))
            parts.append(PART_JSON[kind] % text)
            if events is not None:
                events.append(PART_CLOSED[kind] % (sequence, at, text, sequence + 1, at, parts[-1]))
                sequence += 2
        closed = MESSAGE_JSON % (self.message_id, status.encode(), b",".join(parts))
        self.output[position] = orjson.Fragment(closed)
        if events is not None:
            events.append(ITEM_DONE % (sequence, position, closed))
            self.sequence = sequence + 1

    def _close_calls(self, events: list[bytes]) -> None:
        for item in self.calls.values():
            where = self._at(item)
            if not item["call_id"]:
                item["call_id"] = "call_" + item["id"][3:]
            item["arguments"] = orjson.Fragment(orjson.dumps(item["arguments"]))  # serialized once, as a part's text is
            events.append(self.event("response.function_call_arguments.done", {
                **where, "name": item["name"], "arguments": item["arguments"]}))
            item["status"] = "completed"
            events.append(self.event("response.output_item.done", {"output_index": where["output_index"],
                                                                   "item": item}))
        self.calls = {}

    def finished(self, usage: Usage) -> tuple[list[bytes], bytes]:
        """The closing events, and the JSON of the whole Response of a stream that ended as it should."""
        reason = INCOMPLETE.get(self.finish_reason)
        events: list[bytes] = []
        if not self.output:  # an empty answer is an empty message, as in a whole answer
            self._text("", "output_text", events)
        status = "incomplete" if reason else "completed"
        self._close_message(events, status)
        if self.calls:
            self._close_calls(events)
        response = response_json(self.call, self.model, status, orjson.dumps(self.output), usage, reason=reason)
        events.append(LAST[status] % (self.sequence, response))
        self.sequence += 1
        return events, response

    def failed(self, error: ProviderError) -> tuple[list[bytes], bytes]:
        """The event that ends a stream the upstream broke after content, and its Response's JSON."""
        self._close_message(None, "incomplete")
        for item in self.output:
            if isinstance(item, orjson.Fragment):  # a message
                continue
            if item["status"] == "in_progress":
                item["status"] = "incomplete"
            if item["type"] == "function_call" and not item["call_id"]:
                item["call_id"] = "call_" + item["id"][3:]
        message = f"the upstream failed mid-stream; the answer is incomplete: {error.message}"
        response = response_json(self.call, self.model, "failed", orjson.dumps(self.output), error.usage,
                                 error={"code": "server_error", "message": message})
        self.sequence += 1
        return [LAST["failed"] % (self.sequence - 1, response)], response
