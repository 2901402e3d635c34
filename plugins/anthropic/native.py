"""A Messages API request sent as the client wrote it, and the answer given back as Anthropic wrote it.

When a request arrives in Anthropic's own format (``ChatRequest.native``, format
``anthropic.messages``: the ``messages`` surface sets it), the body goes upstream as it
came, with only ``model`` (the provider's) and ``stream`` set: nothing is lost on a round
trip through the chat format (``cache_control``, ``top_k``, ``thinking``, citations,
documents, server tools). The answer comes back as the upstream's message
(``Completion.native``), or one chunk per upstream event (``StreamChunk.native``), with
the text, usage and finish reason the core accounts with read from it as for a chat answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from modelbroker import ChatRequest, Completion, Native, StreamChunk
from modelbroker.plugins.anthropic.convert import StreamState, parse_message

FORMAT = "anthropic.messages"
#: The client's headers that belong with its body: the API version it wrote the body for, and
#: the beta features the body uses. Claude Code needs both forwarded.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


def is_native(request: ChatRequest) -> bool:
    """The request is in the Messages API's own format."""
    return request.native is not None and request.native.format == FORMAT


def native_body(model: str, request: ChatRequest) -> dict[str, Any]:
    """The client's body with the provider's ``model`` and the request's ``stream``."""
    body = dict(request.native.body)
    body["model"] = model
    if request.stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    return body


def native_headers(request: ChatRequest, headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the client's ``anthropic-version`` and ``anthropic-beta``, when it sent them.

    The client's version wins over the provider's ``options.anthropic_version``: the body was
    written for it. (The surface keeps them on the ``Native``, as ``headers``.)
    """
    sent: Mapping[str, str] = getattr(request.native, "headers", None) or {}
    for name in FORWARDED_HEADERS:
        value = sent.get(name)
        if value:
            headers[name] = value
    return headers


def native_completion(data: Any, fallback_model: str) -> Completion:
    """The upstream's message, kept whole in ``native``; ``raw`` is its chat.completion."""
    completion = parse_message(data, fallback_model)
    completion.native = Native(FORMAT, data)
    return completion


class NativeStream:
    """One chunk per upstream event, the event itself in ``native``.

    ``StreamState`` reads each event as it does for a chat stream (text, usage, finish
    reason, the end, an error event); what the chat format has no place for (thinking,
    server tools, citations) is content too here, since the client sees it.
    """

    def __init__(self, model: str, secret: str | None = None) -> None:
        self.state = StreamState(model, secret)

    @property
    def done(self) -> bool:
        return self.state.done

    def chunk(self, event: dict[str, Any]) -> StreamChunk:
        """The chunk for one event; raises ProviderError for an ``error`` event."""
        pieces = self.state.feed(event)
        chunk = StreamChunk(raw={}, model=self.state.model, native=event,
                            has_content=_more_content(event))
        for piece in pieces:
            chunk.text += piece.text
            chunk.has_content = chunk.has_content or piece.has_content
            chunk.usage = piece.usage or chunk.usage
            chunk.finish_reason = piece.finish_reason or chunk.finish_reason
        return chunk


def _more_content(event: dict[str, Any]) -> bool:
    """Content that a chat chunk would not carry: a block other than text or thinking (tool
    results of server tools, redacted thinking), or a thinking or citation delta."""
    kind = event.get("type")
    if kind == "content_block_start":
        block = event.get("content_block")
        return isinstance(block, dict) and block.get("type") not in ("text", "thinking")
    if kind == "content_block_delta":
        delta = event.get("delta")
        return isinstance(delta, dict) and delta.get("type") in ("thinking_delta", "citations_delta") and any(
            delta.get(field) for field in ("thinking", "citation"))
    return False


def message_events(message: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """A whole message as the events of a stream, for an upstream that answered whole to
    ``stream: true``: each block starts with what it streams emptied, and gets one delta."""
    usage = message.get("usage") if isinstance(message.get("usage"), dict) else {}
    yield {"type": "message_start", "message": {**message, "content": [], "stop_reason": None,
                                                "stop_sequence": None}}
    yield {"type": "ping"}
    for index, block in enumerate(b for b in message.get("content") or () if isinstance(b, dict)):
        yield from _block_events(index, block)
    yield {"type": "message_delta", "usage": usage,
           "delta": {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}}
    yield {"type": "message_stop"}


def _block_events(index: int, block: dict[str, Any]) -> Iterable[dict[str, Any]]:
    kind = block.get("type")
    if kind == "text":
        start, delta = {**block, "text": ""}, {"type": "text_delta", "text": block.get("text", "")}
    elif kind in ("tool_use", "server_tool_use"):
        start = {**block, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input") or {}).decode()}
    elif kind == "thinking":
        start, delta = {**block, "thinking": "", "signature": ""}, {"type": "thinking_delta",
                                                                   "thinking": block.get("thinking", "")}
    else:
        start, delta = block, None
    yield {"type": "content_block_start", "index": index, "content_block": start}
    if delta is not None:
        yield {"type": "content_block_delta", "index": index, "delta": delta}
    if kind == "thinking" and block.get("signature"):
        yield {"type": "content_block_delta", "index": index,
               "delta": {"type": "signature_delta", "signature": block["signature"]}}
    yield {"type": "content_block_stop", "index": index}
