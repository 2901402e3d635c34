"""Surface ``chat``: ``POST /v1/chat/completions``, modelbroker as an OpenAI ``base_url``.

The request is checked, then passed on: fields the gateway does not own go to
OpenAI-style upstreams untouched, and ``model`` routes (a provider id, a model name, a
provider name, ``auto`` or a strategy name). The answer is the upstream's own
``chat.completion``, or its chunks relayed as they arrive. Also answered without ``/v1``.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import Annotated, Any, Literal

import orjson
from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import NotRequired, TypedDict

from modelbroker import (
    ChatRequest,
    Completion,
    Incoming,
    Routed,
    StreamEnd,
    checked_json,
    error_responses,
    hookimpl,
    request_body_schema,
    sse_event,
)

NAME = "chat"
DONE = b"data: [DONE]\n\n"

#: Request fields the gateway reads itself; all others are passed through.
OWNED_FIELDS = frozenset({"model", "messages", "stream", "max_tokens", "temperature"})


@with_config(ConfigDict(extra="allow", strict=True))
class ChatMessage(TypedDict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: NotRequired[str | list[dict[str, Any]] | None]


@with_config(ConfigDict(extra="allow", strict=True))
class ChatCompletionBody(TypedDict):
    """The OpenAI chat request; fields not listed here are allowed and passed through.

    Strict: ``"stream": "false"`` or ``"max_tokens": "5"`` is refused (as OpenAI
    does), since the body is passed on as sent, not as pydantic would coerce it.
    Every field OpenAI's schema makes nullable may be null. A TypedDict, not a model:
    the body is only checked (the surface reads the parsed dict), and pydantic checks
    into plain dicts markedly faster than into model instances, once per request
    (docs/performance.md, 'Measurements behind the code').
    """

    model: NotRequired[Annotated[str, Field(min_length=1, json_schema_extra={"default": "auto"})]]
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: NotRequired[Annotated[bool, Field(json_schema_extra={"default": False})] | None]
    stream_options: NotRequired[dict[str, Any] | None]
    max_tokens: NotRequired[Annotated[int, Field(gt=0)] | None]
    max_completion_tokens: NotRequired[Annotated[int, Field(gt=0)] | None]
    temperature: NotRequired[Annotated[float, Field(ge=0, le=2)] | None]
    top_p: NotRequired[Annotated[float, Field(ge=0, le=1)] | None]
    n: NotRequired[Annotated[int, Field(ge=1, le=128)] | None]
    stop: NotRequired[str | list[str] | None]
    seed: NotRequired[int | None]
    user: NotRequired[str | None]
    tools: NotRequired[list[dict[str, Any]] | None]
    tool_choice: NotRequired[str | dict[str, Any] | None]
    response_format: NotRequired[dict[str, Any] | None]


CHAT_BODY = TypeAdapter(ChatCompletionBody)


class ChatCompletions:
    """The OpenAI chat completions API."""

    paths = ("/v1/chat/completions", "/chat/completions")
    summary = "Chat completions (OpenAI)"
    openapi = {
        **request_body_schema(CHAT_BODY),
        "responses": {
            200: {"description": "A `chat.completion`; with `stream: true`, server-sent events of "
                                 "`chat.completion.chunk`s ending with `data: [DONE]`.",
                  "content": {"text/event-stream": {}}},
            **error_responses(400, 401, 403, 404, 413, 415, 429, 500, 502, 503, 504),
        },
    }

    def parse(self, body: bytes, incoming: Incoming) -> ChatRequest:
        data = parse_chat_body(body)
        user = data.get("user")
        return ChatRequest(
            messages=data["messages"],
            model=data.get("model") or "auto",
            max_tokens=data.get("max_tokens"),
            temperature=data.get("temperature"),
            stream=bool(data.get("stream")),
            client=user if isinstance(user, str) else None,
            extra={k: v for k, v in data.items() if k not in OWNED_FIELDS},
        )

    def answer(self, request: ChatRequest, routed: Routed) -> dict[str, Any]:
        return completion_body(routed.completion, request)

    def stream(self, request: ChatRequest, routed: Routed):
        options = request.extra.get("stream_options")
        return relay_chunks(routed, bool(isinstance(options, dict) and options.get("include_usage")))


@hookimpl
def register_surfaces(register):
    register(NAME, ChatCompletions)


def parse_chat_body(raw: bytes) -> dict[str, Any]:
    """The request as a dict, after checking it; raises APIError 400 naming the field."""
    return checked_json(raw, CHAT_BODY, "an OpenAI chat request")


def completion_body(completion: Completion, chat: ChatRequest) -> dict[str, Any]:
    """The upstream's chat.completion, or one built from the completion if the adapter gave none.

    Every choice has ``logprobs`` and its message ``refusal`` (null when the upstream left
    them out), as OpenAI's schema requires and typed clients expect.
    """
    body = completion.raw
    if body is None:
        usage = completion.usage
        return {
            "id": f"chatcmpl-{chat.request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": completion.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                      "total_tokens": usage.total_tokens},
        }
    if "model" not in body:
        body["model"] = completion.model
    for choice in body.get("choices") or ():
        if "logprobs" not in choice:
            choice["logprobs"] = None
        message = choice.get("message")
        if message is not None and "refusal" not in message:
            message["refusal"] = None
    return body


async def relay_chunks(routed: Routed, wants_usage: bool):
    """The stream's chunks as SSE; ``[DONE]`` only after a complete stream, an error event otherwise."""
    async with aclosing(routed.relay()) as items:
        async for item in items:
            if isinstance(item, StreamEnd):
                yield stream_error_event(item.error) if item.error is not None else DONE
                return
            if item.usage is not None and not item.raw.get("choices") and not wants_usage:
                continue  # the gateway asked for usage on its own account; the client did not
            yield b"data: " + orjson.dumps(item.raw) + b"\n\n"


def stream_error_event(error) -> bytes:
    """The event that ends a stream the upstream broke after content was sent."""
    return sse_event({"error": {
        "message": f"the upstream failed mid-stream; the answer is incomplete: {error.message}",
        "type": "upstream_error",
        "param": None,
        "code": "stream_interrupted",
    }})
