"""Adapter ``type: echowire``: providers that speak EchoWire, a one-text-in, one-text-out format.

EchoWire is made up for this example; README.md spells it out::

    POST <endpoint>                          x-echowire-key: <api_key>
    {"input": "...", "model": "...", "max_out": 256, "stream": false}
    -> 200 {"output": "...", "used": {"in": 12, "out": 30}}
    -> 4xx/5xx {"error": {"code": "...", "message": "..."}}

    with "stream": true, server-sent events:
    data: {"delta": "..."}                   one per piece of the text
    data: {"used": {"in": 12, "out": 30}}
    data: [END]
    (or, when the model fails half-way, data: {"error": {"code": "...", "message": "..."}})

EchoWire has no roles, so ``input`` is the text of all messages, joined by newlines.
``max_out`` is the request's ``max_tokens``, else ``options.max_out``, else left out.
Calls go through the gateway's own pooled client (the ``http`` argument), and every
failure becomes a ``ProviderError`` through the public helpers, so the gateway retries
it or falls back as it does for the built-in adapters.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from modelbroker import (
    ChatRequest,
    Completion,
    ErrorKind,
    ProviderConfig,
    ProviderError,
    StreamChunk,
    UpstreamHTTP,
    UpstreamStream,
    Usage,
    error_message,
    hookimpl,
    open_event_stream,
    rate_limit_of,
    safe_message,
    snippet,
    sse_data,
    status_error,
)

TYPE = "echowire"
KEY_HEADER = "x-echowire-key"
END = "[END]"


class EchoWire:
    """The adapter: one object per gateway, asked for every attempt at an ``echowire`` provider."""

    async def call_provider(self, provider: ProviderConfig, request: ChatRequest, http: UpstreamHTTP):
        if request.stream:
            return await open_stream(provider, request, http)
        return await complete(provider, request, http)


@hookimpl
def register_adapters(register):
    register(TYPE, EchoWire)


def request_body(provider: ProviderConfig, request: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"input": request.prompt_text(), "model": provider.model}
    max_out = request.max_tokens if request.max_tokens is not None else provider.options.get("max_out")
    if max_out is not None:
        body["max_out"] = max_out
    return body


def request_headers(provider: ProviderConfig) -> dict[str, str]:
    secret = provider.secret()
    return {"content-type": "application/json", **({KEY_HEADER: secret} if secret else {})}


async def complete(provider: ProviderConfig, request: ChatRequest, http: UpstreamHTTP) -> Completion:
    """One whole EchoWire call; raises ProviderError (never holding the key) for every failure."""
    secret = provider.secret()
    started = time.perf_counter()
    reply = await http.post(provider.endpoint, json.dumps(request_body(provider, request)).encode(),
                            request_headers(provider), timeout_s=provider.timeout_s,
                            connect_timeout_s=provider.connect_timeout_s, secret=secret)
    upstream_ms = (time.perf_counter() - started) * 1000
    if reply.status >= 300:
        raise status_error(reply.status, reply.headers, reply.body, secret)
    text, used = parse_reply(reply.body, secret)
    return Completion(
        text=text,
        model=provider.model,  # EchoWire does not say which model answered
        usage=used,
        raw=None,  # not an OpenAI body: /v1/chat/completions builds one from text and usage
        upstream_ms=upstream_ms,
        rate_limit=rate_limit_of(reply.headers),
    )


def parse_reply(content: bytes, secret: str | None = None) -> tuple[str, Usage]:
    """``(output, usage)`` from a 2xx body; ProviderError ``malformed`` otherwise."""
    try:
        data = json.loads(content)
        text, used = data["output"], usage_of(data["used"])
    except (ValueError, KeyError, TypeError):
        text = used = None
    if not isinstance(text, str) or used is None:
        raise ProviderError(ErrorKind.MALFORMED, f"not an EchoWire reply: {snippet(content, secret, 120)}")
    return text, used


def usage_of(used: Any) -> Usage | None:
    """EchoWire's ``{"in": n, "out": m}``, or None if it is not that."""
    counts = (used.get("in"), used.get("out")) if isinstance(used, dict) else (None, None)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        return None
    return Usage(counts[0], counts[1], counts[0] + counts[1])


# --- streams --------------------------------------------------------------------------------


async def open_stream(provider: ProviderConfig, request: ChatRequest,
                      http: UpstreamHTTP) -> AsyncIterator[StreamChunk]:
    """Send a streaming request; return its chunks once the upstream has answered 2xx.

    An error status is raised here, by the awaitable, not by the iterator: until the
    first chunk with content reaches the client, the gateway can still fall back.
    """
    body = json.dumps({**request_body(provider, request), "stream": True}).encode()
    stream = await open_event_stream(http, provider, provider.endpoint, body, request_headers(provider),
                                     status_error)
    return read_stream(stream, provider)


async def read_stream(stream: UpstreamStream, provider: ProviderConfig) -> AsyncIterator[StreamChunk]:
    """EchoWire's events as OpenAI ``chat.completion.chunk``s.

    The gateway closes this iterator (``aclose``) when the client goes away or the stream
    has been relayed; the ``finally`` then releases the upstream connection. An error
    event, or a stream that stops before ``[END]``, raises ProviderError: before any
    content the gateway falls back, after it the client's stream ends with an error event.
    """
    secret = provider.secret()
    head = {"id": f"echowire-{time.time_ns()}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": provider.model}
    ended = False
    try:
        async for data in sse_data(stream):
            if data == END:
                ended = True
                break
            event = _event(data, secret)
            if "error" in event:
                message, code = error_message(data, secret)
                raise ProviderError(ErrorKind.ERROR_EVENT, safe_message(f"the upstream sent an error: {message}",
                                                                        secret), code=code)
            if "delta" in event:
                text = str(event["delta"])
                yield StreamChunk(raw={**head, "choices": [{"index": 0, "delta": {"content": text},
                                                            "finish_reason": None}]},
                                  text=text, has_content=bool(text), model=provider.model)
            elif "used" in event:
                usage = usage_of(event["used"])
                if usage is None:
                    raise ProviderError(ErrorKind.MALFORMED, "an EchoWire usage event without counts")
                # The last content chunk says the answer is complete; the usage chunk has no choices.
                yield StreamChunk(raw={**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                                  finish_reason="stop")
                yield StreamChunk(raw={**head, "choices": [], "usage": {
                    "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                    "total_tokens": usage.total_tokens}}, usage=usage)
    finally:
        await stream.close()
    if not ended:
        raise ProviderError(ErrorKind.CONNECTION, "the EchoWire stream ended before [END]")


def _event(data: str, secret: str | None) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise ProviderError(ErrorKind.MALFORMED, f"an EchoWire event is not a JSON object: "
                                                 f"{snippet(data.encode(), secret)}")
    return event
