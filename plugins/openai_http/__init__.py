"""Adapter ``type: openai``: any OpenAI-compatible chat-completions endpoint.

Groq, OpenAI, Together, Fireworks, DeepSeek, a local vLLM or Ollama (``/v1``)
all speak this wire format. The request's extra OpenAI fields are passed
through untouched; ``model`` is always the provider's. A provider of ``kind: embeddings``
is an OpenAI-compatible embeddings endpoint (``embeddings.py``). The adapter states no
``features``: it passes every field through, so a provider carries whatever its model does.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
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
    Usage,
    estimated_usage,
    hookimpl,
    open_event_stream,
    rate_limit_of,
    redact,
    safe_message,
    single_chunk_stream,
    snippet,
    sse_data,
    status_error,
)
from modelbroker.plugins.openai_http import embeddings

TYPE = "openai"


class OpenAIChat:
    """Calls a chat-completions endpoint (whole, or as a stream when the client asked for one),
    or, for an embeddings request, an embeddings endpoint."""

    def call_provider(self, provider, request, http):
        if request.kind == "embeddings":
            return embed(provider, request, http)
        if request.stream:
            return open_stream(provider, request, http)
        return complete(provider, request, http)


@hookimpl
def register_adapters(register):
    register(TYPE, OpenAIChat)


@hookimpl
def register_fake_formats(register):
    from modelbroker.plugins.openai_http.fake import OpenAIFormat

    register(TYPE, OpenAIFormat())


def request_body(model: str, request: ChatRequest) -> dict[str, Any]:
    """The upstream body: the client's extra fields, then the fields the gateway owns."""
    body = dict(request.extra)
    body["model"] = model
    body["messages"] = request.messages
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    return body


def stream_body(model: str, request: ChatRequest) -> dict[str, Any]:
    """The upstream body for a stream; usage is always asked for, so cost is never a guess."""
    body = request_body(model, request)
    body["stream"] = True
    options = body.get("stream_options")
    body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return body


def request_headers(api_key: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


async def complete(provider, request: ChatRequest, http: UpstreamHTTP) -> Completion:
    """One non-streaming call; raises ProviderError for every kind of failure."""
    secret = provider.secret()
    started = time.perf_counter()
    reply = await http.post(
        provider.endpoint, orjson.dumps(request_body(provider.model, request)), request_headers(secret),
        timeout_s=provider.timeout_s, connect_timeout_s=provider.connect_timeout_s, secret=secret,
    )
    upstream_ms = (time.perf_counter() - started) * 1000
    if reply.status >= 300:
        raise status_error(reply.status, reply.headers, reply.body, secret)
    completion = parse_completion(reply.body, provider.model, secret)
    completion.upstream_ms = upstream_ms
    completion.rate_limit = rate_limit_of(reply.headers)
    if completion.raw is not None and not isinstance(completion.raw.get("usage"), dict):
        completion.usage = estimated_usage(request, completion.text)
    return completion


async def embed(provider, request: ChatRequest, http: UpstreamHTTP) -> Completion:
    """One embeddings call; raises ProviderError for every kind of failure, as ``complete`` does."""
    secret = provider.secret()
    body = embeddings.request_body(provider.model, request, provider.options)
    started = time.perf_counter()
    reply = await http.post(
        provider.endpoint, orjson.dumps(body), request_headers(secret),
        timeout_s=provider.timeout_s, connect_timeout_s=provider.connect_timeout_s, secret=secret,
    )
    upstream_ms = (time.perf_counter() - started) * 1000
    if reply.status >= 300:
        raise status_error(reply.status, reply.headers, reply.body, secret)
    count = embeddings.input_count(body.get("input"))
    completion = embeddings.parse_embeddings(reply.body, provider.model, count, secret)
    completion.upstream_ms = upstream_ms
    completion.rate_limit = rate_limit_of(reply.headers)
    if not isinstance(completion.raw.get("usage"), dict):
        completion.usage = estimated_usage(request, "")
    return completion


def parse_completion(content: bytes, fallback_model: str, secret: str | None = None) -> Completion:
    """Read an OpenAI chat.completion body; raises ProviderError(malformed) if it is not one."""
    try:
        data = orjson.loads(content)
        message = data["choices"][0]["message"]
        text = message.get("content") or ""
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        raise ProviderError(
            ErrorKind.MALFORMED, f"not an OpenAI chat completion (body starts {snippet(content, secret)!r})"
        ) from None
    return Completion(
        text=text if isinstance(text, str) else str(text),
        model=str(data.get("model") or fallback_model),
        usage=parse_usage(data.get("usage")),
        raw=data,
    )


def parse_usage(usage: Any) -> Usage:
    """OpenAI usage, keeping cached prompt tokens and reasoning tokens apart."""
    if not isinstance(usage, dict):
        return Usage()
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=_int(usage.get("total_tokens")) or prompt + completion,
        cached_tokens=prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else None,
        reasoning_tokens=completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else None,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


async def open_stream(provider, request: ChatRequest, http: UpstreamHTTP) -> AsyncIterator[StreamChunk]:
    """Send a streaming request; return its chunks once the upstream has answered 2xx."""
    secret = provider.secret()
    body = orjson.dumps(stream_body(provider.model, request))
    stream = await open_event_stream(http, provider, provider.endpoint, body, request_headers(secret), status_error)
    if stream.is_json:
        return _whole_answer_as_stream(stream, provider.model, secret)
    return read_stream(stream, secret)


async def read_stream(stream: UpstreamStream, secret: str | None) -> AsyncIterator[StreamChunk]:
    """The upstream's SSE events as chunks; a stream that stops before its end raises."""
    finished = False
    try:
        async for data in sse_data(stream):
            if data == "[DONE]":
                finished = True
                break
            chunk = parse_chunk(data, secret)
            finished = finished or chunk.finish_reason is not None
            yield chunk
    finally:
        await stream.close()
    if not finished:
        raise ProviderError(ErrorKind.CONNECTION, "the stream ended early, with no finish_reason and no [DONE]")


def parse_chunk(data: str, secret: str | None = None) -> StreamChunk:
    """One ``chat.completion.chunk``; an error event or a chunk that is not JSON raises."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        start = redact(data[:4096], secret)[:80]
        raise ProviderError(ErrorKind.MALFORMED, f"a stream chunk is not JSON (starts {start!r})") from None
    if not isinstance(raw, dict):
        raise ProviderError(ErrorKind.MALFORMED, "a stream chunk is not a JSON object")
    if raw.get("error"):
        error = raw["error"]
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise ProviderError(ErrorKind.ERROR_EVENT, safe_message(f"the upstream sent an error event: {message}", secret))
    text, has_content, finish = "", False, None
    for choice in raw.get("choices") or ():
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if content:
            text += content
            has_content = True
        if delta.get("tool_calls") or delta.get("function_call") or delta.get("refusal"):
            has_content = True
        finish = choice.get("finish_reason") or finish
    usage = raw.get("usage")
    return StreamChunk(
        raw=raw, text=text, has_content=has_content, finish_reason=finish,
        usage=parse_usage(usage) if isinstance(usage, dict) else None, model=raw.get("model"),
    )


async def _whole_answer_as_stream(stream: UpstreamStream, model: str, secret: str | None) -> AsyncIterator[StreamChunk]:
    """An upstream that ignored ``stream: true`` and answered whole: one chunk."""
    async with stream:
        content = await stream.read()
    completion = parse_completion(content, model, secret)
    async for chunk in single_chunk_stream(completion):
        yield chunk
