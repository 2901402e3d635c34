"""Adapter ``type: anthropic``: Anthropic's Messages API.

``endpoint`` is the Messages URL, e.g. ``https://api.anthropic.com/v1/messages``.
The key goes in ``x-api-key``; ``anthropic-version`` is ``2023-06-01`` unless
``options.anthropic_version`` says otherwise. ``max_tokens``, which Anthropic
requires, is the request's, else ``options.max_tokens``, else 1024.

The client's OpenAI request is converted (``convert.py``) and the
answer converted back, so /v1/chat/completions relays an OpenAI
``chat.completion`` (or its chunks) whichever upstream answered; a
``response_format`` becomes a forced tool (``json_mode.py``). A request that came
in Anthropic's own format (the ``messages`` surface) is sent as it came, and
its answer given back as the upstream wrote it (``native.py``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timezone

import orjson

from modelbroker import (
    ChatRequest,
    Completion,
    ErrorKind,
    ProviderError,
    RateLimit,
    StreamChunk,
    UpstreamHTTP,
    UpstreamStream,
    hookimpl,
    int_header,
    open_event_stream,
    parse_event,
    single_chunk_stream,
    snippet,
    sse_data,
    status_error,
)
from modelbroker.plugins.anthropic.convert import StreamState, parse_message, request_body
from modelbroker.plugins.anthropic.json_mode import JsonTool, json_tool
from modelbroker.plugins.anthropic.native import (
    FORMAT,
    NativeStream,
    is_native,
    message_events,
    native_body,
    native_completion,
    native_headers,
)

TYPE = "anthropic"
DEFAULT_VERSION = "2023-06-01"


class AnthropicMessages:
    #: What a chat request may need that this adapter carries (``json_mode.py`` for the JSON
    #: ones); not ``n``, ``seed``, ``logprobs`` or ``audio``, which the Messages API lacks.
    #: And the Messages API's own requests, which only it can carry (a server tool, say).
    features = frozenset({"tools", "parallel_tool_calls", "json_object", "json_schema", "images", FORMAT})

    def call_provider(self, provider, request, http):
        if request.stream:
            return open_stream(provider, request, http)
        return complete(provider, request, http)


@hookimpl
def register_adapters(register):
    register(TYPE, AnthropicMessages)


@hookimpl
def register_fake_formats(register):
    from modelbroker.plugins.anthropic.fake import AnthropicFormat

    register(TYPE, AnthropicFormat())


def request_headers(api_key: str | None, options: Mapping) -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "anthropic-version": str(options.get("anthropic_version", DEFAULT_VERSION)),
    }
    if api_key:
        headers["x-api-key"] = api_key
    return headers


def _payload(provider, request: ChatRequest, secret: str | None) -> tuple[str, bytes, dict[str, str]]:
    """URL, body and headers of the upstream request: the client's own body if it came in
    Anthropic's format, else the chat request converted."""
    headers = request_headers(secret, provider.options)
    if is_native(request):
        return provider.endpoint, orjson.dumps(native_body(provider.model, request)), native_headers(request, headers)
    body = orjson.dumps(request_body(provider.model, request, provider.options))
    return provider.endpoint, body, headers


async def complete(provider, request: ChatRequest, http: UpstreamHTTP) -> Completion:
    """One non-streaming call; raises ProviderError for every kind of failure."""
    secret = provider.secret()
    started = time.perf_counter()
    url, body, headers = _payload(provider, request, secret)
    response = await http.post(url, body, headers, timeout_s=provider.timeout_s,
                               connect_timeout_s=provider.connect_timeout_s, secret=secret)
    upstream_ms = (time.perf_counter() - started) * 1000
    if response.status >= 300:
        raise upstream_error(response.status, response.headers, response.body, secret)
    completion = parse_body(response.body, provider.model, secret, request)
    completion.upstream_ms = upstream_ms
    completion.rate_limit = rate_limit_of(response.headers)
    return completion


def parse_body(content: bytes, model: str, secret: str | None, request: ChatRequest | None = None) -> Completion:
    """An Anthropic message body as a Completion (kept whole in ``native`` for a native
    request); raises ProviderError(malformed) if it is none."""
    data = _message_of(content, secret)
    if request is not None and is_native(request):
        return native_completion(data, model)
    return parse_message(data, model, json_tool(request.extra) if request is not None else None)


def _message_of(content: bytes, secret: str | None):
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        raise ProviderError(ErrorKind.MALFORMED,
                            f"not an Anthropic message (body starts {snippet(content, secret)!r})") from None


async def open_stream(provider, request: ChatRequest, http: UpstreamHTTP) -> AsyncIterator[StreamChunk]:
    """Send a streaming request; return its chunks once the upstream has answered 2xx."""
    secret = provider.secret()
    url, body, headers = _payload(provider, request, secret)
    stream = await open_event_stream(http, provider, url, body, headers, upstream_error)
    native = is_native(request)
    if stream.is_json:
        if native:
            return _whole_message_as_events(stream, provider.model, secret)
        return _whole_answer_as_stream(stream, provider.model, secret, json_tool(request.extra))
    if native:
        return read_native_stream(stream, provider.model, secret)
    return read_stream(stream, provider.model, secret, json_tool(request.extra))


async def read_stream(response: UpstreamStream, model: str, secret: str | None,
                      answer_tool: JsonTool | None = None) -> AsyncIterator[StreamChunk]:
    """The upstream's events as OpenAI chunks; a stream that stops before ``message_stop`` raises."""
    state = StreamState(model, secret, answer_tool)
    try:
        async for data in sse_data(response):
            for chunk in state.feed(parse_event(data, secret)):
                yield chunk
            if state.done:
                break
    finally:
        await response.close()
    if not state.done:
        raise ProviderError(ErrorKind.CONNECTION, "the stream ended early, before message_stop")


async def read_native_stream(response: UpstreamStream, model: str, secret: str | None) -> AsyncIterator[StreamChunk]:
    """One chunk per upstream event, ping included, the event kept in ``native``; a stream
    that stops before ``message_stop`` raises."""
    reader = NativeStream(model, secret)
    try:
        async for data in sse_data(response):
            yield reader.chunk(parse_event(data, secret))
            if reader.done:
                break
    finally:
        await response.close()
    if not reader.done:
        raise ProviderError(ErrorKind.CONNECTION, "the stream ended early, before message_stop")


async def _whole_answer_as_stream(response: UpstreamStream, model: str, secret: str | None,
                                  answer_tool: JsonTool | None = None) -> AsyncIterator[StreamChunk]:
    """An upstream (or proxy) that ignored ``stream: true`` and answered whole: one chunk."""
    async with response:
        content = await response.read()
    async for chunk in single_chunk_stream(parse_message(_message_of(content, secret), model, answer_tool)):
        yield chunk


async def _whole_message_as_events(response: UpstreamStream, model: str,
                                   secret: str | None) -> AsyncIterator[StreamChunk]:
    """The same for a native request: the message told as the events a stream of it has."""
    async with response:
        content = await response.read()
    message = native_completion(_message_of(content, secret), model).native.body  # checked: a message
    reader = NativeStream(model, secret)
    for event in message_events(message):
        yield reader.chunk(event)


def upstream_error(status: int, headers: Mapping[str, str], body: bytes, secret: str | None) -> ProviderError:
    """``status_error`` (which reads Anthropic's error shape), plus its rate-limit headers and
    its wording for a prompt that does not fit, so the router can try a larger context."""
    error = status_error(status, headers, body, secret)
    error.rate_limit = rate_limit_of(headers) or error.rate_limit
    text = error.message.lower()
    if status in (400, 413) and "prompt is too long" in text:
        error.code = "context_length_exceeded"
    elif status in (400, 402, 403, 429) and "credit balance" in text:  # "Your credit balance is too low ..."
        error.code = "insufficient_quota"
    return error


def rate_limit_of(headers: Mapping[str, str]) -> RateLimit | None:
    """The ``anthropic-ratelimit-*`` headers, whose resets are RFC 3339 times, if any."""
    requests = int_header(headers.get("anthropic-ratelimit-requests-remaining"))
    tokens = int_header(headers.get("anthropic-ratelimit-tokens-remaining"))
    if requests is None and tokens is None:
        return None
    return RateLimit(
        remaining_requests=requests,
        remaining_tokens=tokens,
        reset_requests_s=_seconds_until(headers.get("anthropic-ratelimit-requests-reset")),
        reset_tokens_s=_seconds_until(headers.get("anthropic-ratelimit-tokens-reset")),
    )


def _seconds_until(value: str | None) -> float | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - time.time())
