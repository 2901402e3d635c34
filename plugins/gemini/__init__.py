"""Adapter ``type: gemini``: Google's Gemini API (Google AI Studio keys).

``endpoint`` is the models base, ``https://generativelanguage.googleapis.com/v1beta/models``;
the adapter posts to ``{endpoint}/{model}:generateContent``, or for a stream to
``{endpoint}/{model}:streamGenerateContent?alt=sse``. The key goes in the
``x-goog-api-key`` header, never in the URL (URLs end up in logs).
``options.max_tokens`` is a default ``maxOutputTokens``.

The client's OpenAI request is converted (``convert.py``) and the
answer converted back (``answer.py``), so /v1/chat/completions relays an OpenAI
``chat.completion`` (or its chunks) whichever upstream answered. The features
Gemini can carry are stated (``FEATURES``), so a request needing another (audio)
goes to a provider that has it instead of losing it here.

A provider of ``kind: embeddings`` calls ``{endpoint}/{model}:embedContent`` or
``:batchEmbedContents`` (``embeddings.py``), with the same endpoint, key and errors.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from modelbroker import (
    ChatRequest,
    Completion,
    ErrorKind,
    ProviderError,
    StreamChunk,
    UpstreamHTTP,
    UpstreamStream,
    duration_seconds,
    estimated_usage,
    hookimpl,
    open_event_stream,
    parse_event,
    snippet,
    sse_data,
    status_error,
)
from modelbroker.plugins.gemini import embeddings
from modelbroker.plugins.gemini.answer import StreamState, parse_response
from modelbroker.plugins.gemini.convert import request_body

TYPE = "gemini"
#: What ``convert.py`` carries to Gemini (core/_routing/features.py names them): ``response_format``
#: as ``responseMimeType`` and ``responseJsonSchema``, ``n`` as ``candidateCount``, ``seed``,
#: ``logprobs``/``top_logprobs`` as ``responseLogprobs``/``logprobs`` (and back into each
#: choice), images as inline data. Not audio.
FEATURES = frozenset({"tools", "parallel_tool_calls", "json_object", "json_schema", "images", "n", "seed",
                      "logprobs"})


class GeminiGenerateContent:
    features = FEATURES

    def call_provider(self, provider, request, http):
        if request.kind == "embeddings":
            return embed(provider, request, http)
        if request.stream:
            return open_stream(provider, request, http)
        return complete(provider, request, http)


@hookimpl
def register_adapters(register):
    register(TYPE, GeminiGenerateContent)


@hookimpl
def register_fake_formats(register):
    from modelbroker.plugins.gemini.fake import GeminiFormat

    register(TYPE, GeminiFormat())


def model_url(endpoint: str, model: str, stream: bool) -> str:
    """The generation URL for ``model`` (a ``models/`` prefix in the model name is allowed)."""
    if stream:
        return method_url(endpoint, model, "streamGenerateContent") + "?alt=sse"
    return method_url(endpoint, model, "generateContent")


def method_url(endpoint: str, model: str, method: str) -> str:
    """The URL of one of ``model``'s methods (``generateContent``, ``embedContent``...)."""
    return f"{endpoint.rstrip('/')}/{model.removeprefix('models/')}:{method}"


def request_headers(api_key: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if api_key:
        headers["x-goog-api-key"] = api_key
    return headers


def _payload(provider, request: ChatRequest, secret: str | None) -> tuple[str, bytes, dict[str, str]]:
    """URL, body and headers of the upstream request."""
    url = model_url(provider.endpoint, provider.model, request.stream)
    return url, orjson.dumps(request_body(request, provider.options)), request_headers(secret)


async def complete(provider, request: ChatRequest, http: UpstreamHTTP) -> Completion:
    """One non-streaming call; raises ProviderError for every kind of failure."""
    secret = provider.secret()
    started = time.perf_counter()
    url, body, headers = _payload(provider, request, secret)
    response = await http.post(url, body, headers, timeout_s=provider.timeout_s,
                               connect_timeout_s=provider.connect_timeout_s, secret=secret)
    upstream_ms = (time.perf_counter() - started) * 1000
    completion = parse_response(_answer_of(response, secret), provider.model, secret)
    completion.upstream_ms = upstream_ms
    return completion


async def embed(provider, request: ChatRequest, http: UpstreamHTTP) -> Completion:
    """The embeddings of ``request``'s input, in as many calls as its length needs; the first
    failure fails the attempt, as one call's would. The tokens are estimated (Gemini reports none)."""
    secret = provider.secret()
    calls = embeddings.embed_calls(request, provider.model, provider.options, provider.id)
    headers = request_headers(secret)
    vectors: list[list[float]] = []
    upstream_ms = 0.0
    for method, body in calls:
        started = time.perf_counter()
        response = await http.post(method_url(provider.endpoint, provider.model, method), orjson.dumps(body), headers,
                                   timeout_s=provider.timeout_s, connect_timeout_s=provider.connect_timeout_s,
                                   secret=secret)
        upstream_ms += (time.perf_counter() - started) * 1000
        expected = len(body["requests"]) if method == embeddings.BATCH else 1
        vectors.extend(embeddings.read_vectors(_answer_of(response, secret), method, expected))
    model = provider.model.removeprefix("models/")
    usage = estimated_usage(request, "")
    return Completion(text="", model=model, usage=usage, raw=embeddings.embeddings_list(vectors, model, usage),
                      upstream_ms=upstream_ms)


def _answer_of(response, secret: str) -> Any:
    """A whole answer's JSON; raises ProviderError for an error status or a body that is not JSON."""
    if response.status >= 300:
        raise upstream_error(response.status, response.headers, response.body, secret)
    try:
        return orjson.loads(response.body)
    except orjson.JSONDecodeError:
        raise ProviderError(ErrorKind.MALFORMED,
                            f"not a Gemini response (body starts {snippet(response.body, secret)!r})") from None


async def open_stream(provider, request: ChatRequest, http: UpstreamHTTP) -> AsyncIterator[StreamChunk]:
    """Send a streaming request; return its chunks once the upstream has answered 2xx."""
    secret = provider.secret()
    url, body, headers = _payload(provider, request, secret)
    stream = await open_event_stream(http, provider, url, body, headers, upstream_error)
    if stream.is_json:
        return _whole_answer_as_stream(stream, provider.model, secret)
    return read_stream(stream, provider.model, secret)


async def read_stream(response: UpstreamStream, model: str, secret: str | None) -> AsyncIterator[StreamChunk]:
    """The upstream's responses as OpenAI chunks, then the usage chunk; a stream that
    ends before any ``finishReason`` raises ProviderError(connection)."""
    state = StreamState(model, secret)
    try:
        async for data in sse_data(response):
            for chunk in state.feed(parse_event(data, secret)):
                yield chunk
    finally:
        await response.close()
    if not state.finished:
        raise ProviderError(ErrorKind.CONNECTION, "the stream ended early, before any finishReason")
    usage = state.usage_chunk()
    if usage is not None:
        yield usage


async def _whole_answer_as_stream(response: UpstreamStream, model: str,
                                  secret: str | None) -> AsyncIterator[StreamChunk]:
    """An answer sent whole (one response, or the JSON array of a stream without ``alt=sse``),
    read as the stream it stands for."""
    async with response:
        content = await response.read()
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise ProviderError(ErrorKind.MALFORMED,
                            f"not a Gemini response (body starts {snippet(content, secret)!r})") from None
    state = StreamState(model, secret)
    for item in data if isinstance(data, list) else [data]:
        for chunk in state.feed(item):
            yield chunk
    if not state.finished:
        raise ProviderError(ErrorKind.MALFORMED, "not a Gemini response (no candidate with a finishReason)")
    usage = state.usage_chunk()
    if usage is not None:
        yield usage


def upstream_error(status: int, headers: Mapping[str, str], body: bytes, secret: str | None) -> ProviderError:
    """``status_error`` for Google's ``{"error": {"code", "message", "status"}}``: the code is
    the ``status`` name (``RESOURCE_EXHAUSTED``), ``RetryInfo`` gives the retry delay, and a
    prompt over the input limit is marked so the router can try a larger context."""
    detail = _google_error(body)
    if detail is not None:
        body = orjson.dumps({"error": detail})  # also unwraps the [{"error": ...}] array form
    error = status_error(status, headers, body, secret)
    if detail is None:
        return error
    if detail.get("status"):
        error.code = str(detail["status"])
    if _reason(detail.get("details")) == "API_KEY_INVALID":  # a 400 INVALID_ARGUMENT, but the key's fault
        error.code = "invalid_api_key"
    if error.retry_after is None:
        error.retry_after = _retry_delay(detail.get("details"))
    if "exceeds the maximum number of tokens" in error.message:
        error.code = "context_length_exceeded"
    return error


def _reason(details: Any) -> str | None:
    """The ``reason`` of Google's ``ErrorInfo`` detail (``API_KEY_INVALID``), if any."""
    for item in details if isinstance(details, list) else ():
        if isinstance(item, dict) and isinstance(item.get("reason"), str):
            return item["reason"]
    return None


def _google_error(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else None


def _retry_delay(details: Any) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"retryDelay": "17s"``), if any."""
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            return duration_seconds(str(detail.get("retryDelay", "")))
    return None
