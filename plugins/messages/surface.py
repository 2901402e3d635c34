"""The ``messages`` surface: ``POST /v1/messages`` read into a ``ChatRequest`` and answered as Anthropic does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelbroker import (
    APIError,
    ChatRequest,
    Incoming,
    Native,
    Routed,
    error_responses,
    request_body_schema,
)
from modelbroker.plugins.messages.body import MESSAGES_BODY, checked
from modelbroker.plugins.messages.convert import chat_extra, chat_messages, message_body, native_only
from modelbroker.plugins.messages.errors import error_body
from modelbroker.plugins.messages.events import stream_events

FORMAT = "anthropic.messages"
#: The client's headers an Anthropic upstream needs with its body (Claude Code sends both).
KEPT_HEADERS = ("anthropic-version", "anthropic-beta")
COUNT_TOKENS_PATHS = ("/v1/messages/count_tokens", "/messages/count_tokens")


@dataclass(slots=True)
class MessagesNative(Native):
    """The body as received, and the ``anthropic-*`` headers that go with it (``headers``), which
    the ``anthropic`` adapter forwards."""

    headers: dict[str, str] = field(default_factory=dict)


class Messages:
    """Anthropic's Messages API."""

    paths = ("/v1/messages", "/messages")
    error_paths = COUNT_TOKENS_PATHS
    summary = "Messages (Anthropic)"
    openapi = {
        **request_body_schema(MESSAGES_BODY),
        "responses": {
            200: {"description": "An Anthropic `message`; with `stream: true`, its server-sent events "
                                 "(`message_start` ... `message_stop`).",
                  "content": {"text/event-stream": {}}},
            **error_responses(400, 401, 403, 404, 413, 415, 429, 500, 502, 503, 504),
        },
    }

    def parse(self, body: bytes, incoming: Incoming) -> ChatRequest:
        data = checked(body)
        extra = chat_extra(data)
        headers = {name: value for name in KEPT_HEADERS if (value := incoming.header(name))}
        unsent: list[str] = []
        messages = chat_messages(data, unsent)
        return ChatRequest(
            messages=messages,
            model=data["model"],
            max_tokens=data["max_tokens"],
            temperature=data.get("temperature"),
            stream=bool(data.get("stream")),
            client=extra.get("user"),
            extra=extra,
            native=MessagesNative(FORMAT, data, native_only(data, unsent), headers),
        )

    def answer(self, request: ChatRequest, routed: Routed) -> dict[str, Any]:
        completion = routed.completion
        if completion.native is not None and completion.native.format == FORMAT:
            return completion.native.body
        return message_body(completion, message_id(request))

    def stream(self, request: ChatRequest, routed: Routed):
        return stream_events(request, routed, message_id(request))

    def error(self, error: APIError) -> dict[str, Any]:
        return error_body(error)


def message_id(request: ChatRequest) -> str:
    return f"msg_{request.uid}"
