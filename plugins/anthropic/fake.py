"""Anthropic's Messages API (``POST /v1/messages``) as the fake upstream speaks it.

Like the real API, a request without ``x-api-key`` gets 401 and one without
``max_tokens`` gets 400, both in Anthropic's error shape
``{"type": "error", "error": {"type", "message"}}``. A stream is the real event
sequence: ``message_start``, ``content_block_start``, ``ping``, one
``content_block_delta`` per piece, ``content_block_stop``, ``message_delta``
(stop reason and output tokens), ``message_stop``. Offered tools, it calls the first with
an empty input; made to call one (``tool_choice`` ``{"type": "tool", "name"}``), it calls
that one with an input made from its ``input_schema``, streamed in pieces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from modelbroker.fake_upstream.formats import FakeRequest, Rejected, Reply, Script, split, sse, text_of

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 529: "overloaded_error"}


def error_body(status: int, message: str, error_type: str | None = None) -> bytes:
    kind = error_type or ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


class AnthropicCall:
    """One Messages API request; ``number`` makes the message id unique."""

    def __init__(self, payload: Any, headers: Mapping[str, str], number: int) -> None:
        if not headers.get("x-api-key"):
            raise Rejected(401, error_body(401, "x-api-key header is required"))
        if not isinstance(payload, dict) or not payload.get("model"):
            raise Rejected(400, error_body(400, "model: Field required"))
        if not isinstance(payload.get("messages"), list):
            raise Rejected(400, error_body(400, "messages: Field required"))
        if not isinstance(payload.get("max_tokens"), int):
            raise Rejected(400, error_body(400, "max_tokens: Field required"))
        self.payload = payload
        self.model = str(payload["model"])
        self.stream = bool(payload.get("stream"))
        self.id = f"msg_fake_{number}"

    def reply(self, reply: str | None, chunks: int) -> Reply:
        messages = [m for m in self.payload["messages"] if isinstance(m, dict)]
        prompts = [text_of(m.get("content")) for m in messages]
        system = self.payload.get("system")
        if system:
            prompts.insert(0, text_of(system))
        users = [m for m in messages if m.get("role") == "user" and text_of(m.get("content"))]
        last = text_of(users[-1].get("content")) if users else ""
        return Reply.build(self.model, prompts, last, self._tool_name(), reply, chunks)

    def _tool_name(self) -> str | None:
        tools = self.payload.get("tools")
        if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
            return None
        forced = self._forced_tool()
        return str(forced["name"] if forced is not None else tools[0].get("name", "tool"))

    def _forced_tool(self) -> dict | None:
        """The tool ``tool_choice`` names, if it names one that is offered."""
        choice = self.payload.get("tool_choice")
        if not isinstance(choice, dict) or choice.get("type") != "tool":
            return None
        return next((t for t in self.payload.get("tools") or () if isinstance(t, dict)
                     and t.get("name") == choice.get("name")), None)

    def _tool_input(self) -> dict:
        forced = self._forced_tool()
        value = example_of(forced.get("input_schema")) if forced is not None else {}
        return value if isinstance(value, dict) else {}

    def _content(self, reply: Reply) -> list[dict]:
        if reply.tool is not None:
            return [{"type": "tool_use", "id": "toolu_fake_1", "name": reply.tool, "input": self._tool_input()}]
        return [{"type": "text", "text": reply.text}]

    @staticmethod
    def _stop_reason(reply: Reply) -> str:
        return "tool_use" if reply.tool is not None else "end_turn"

    def _message(self, content: list, stop_reason: str | None, input_tokens: int, output_tokens: int) -> dict:
        return {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }

    def completion(self, reply: Reply) -> bytes:
        return orjson.dumps(self._message(
            self._content(reply), self._stop_reason(reply), reply.prompt_tokens, reply.completion_tokens))

    def empty(self, reply: Reply) -> bytes:
        return orjson.dumps(self._message([], "end_turn", reply.prompt_tokens, 0))

    def malformed(self) -> bytes:
        return b'{"content": [tru'

    def error(self, status: int, code: str | None) -> bytes:
        return error_body(status, f"fake upstream error {status}", code)

    def script(self, reply: Reply) -> Script:
        start = sse({"type": "message_start",
                     "message": self._message([], None, reply.prompt_tokens, 1)}, "message_start")
        if reply.tool is not None:
            block = {**self._content(reply)[0], "input": {}}
            opening = [start]
            text = orjson.dumps(self._tool_input()).decode()
            pieces = [p for p in split(text, 3) if p] if self._forced_tool() is not None else [text]
            deltas = [_block_start(block), *(_block_delta({"type": "input_json_delta", "partial_json": piece})
                                             for piece in pieces)]
        else:
            opening = [start, _block_start({"type": "text", "text": ""}), sse({"type": "ping"}, "ping")]
            deltas = [_block_delta({"type": "text_delta", "text": piece}) for piece in reply.pieces]
        closing = [
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            sse({"type": "message_delta", "delta": {"stop_reason": self._stop_reason(reply), "stop_sequence": None},
                 "usage": {"output_tokens": reply.completion_tokens}}, "message_delta"),
            sse({"type": "message_stop"}, "message_stop"),
        ]
        return Script(opening, deltas, closing)

    def error_event(self) -> bytes:
        return sse({"type": "error", "error": {"type": "overloaded_error", "message": "fake mid-stream error"}},
                   "error")


def example_of(schema: Any) -> Any:
    """A value of the shape ``schema`` describes: every property of an object, one item of an
    array, the first of an ``enum`` or of an ``anyOf``."""
    if not isinstance(schema, dict):
        return None
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example_of(schema[key][0])
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        return {name: example_of(sub) for name, sub in properties.items()}
    if kind == "array":
        return [example_of(schema.get("items"))]
    return {"string": "fake", "integer": 1, "number": 1.5, "boolean": True}.get(kind)


def _block_start(block: dict) -> bytes:
    return sse({"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start")


def _block_delta(delta: dict) -> bytes:
    return sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")


class AnthropicFormat:
    """``type: anthropic`` for the fake upstream: ``POST /v1/messages``."""

    def endpoint(self, base_url: str) -> str:
        return base_url + "/v1/messages"

    def call(self, request: FakeRequest) -> AnthropicCall | None:
        if request.method != "POST" or request.path != "/v1/messages":
            return None
        return AnthropicCall(request.payload, request.headers, request.number)
