"""Adapter ``type: openai``: any OpenAI-compatible chat-completions endpoint.

Groq, OpenAI, Together, Fireworks, DeepSeek, a local vLLM or Ollama (``/v1``)
all speak this wire format. The request's extra OpenAI fields are passed
through untouched; ``model`` is always the provider's.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from core.hookspecs import hookimpl
from core.pricing import estimated_usage
from core.types import ChatRequest, Completion, ErrorKind, ProviderError, Usage
from core.upstream import redact, status_error, transport_error

TYPE = "openai"


@hookimpl(trylast=True)
def adapter_types():
    return [TYPE]


@hookimpl(trylast=True)
def call_provider(provider, request, client):
    if provider.type != TYPE:
        return None
    return complete(provider, request, client)


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


def request_headers(api_key: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


async def complete(provider, request: ChatRequest, client: httpx.AsyncClient) -> Completion:
    """One non-streaming call; raises ProviderError for every kind of failure."""
    secret = provider.api_key.get_secret_value() if provider.api_key else None
    timeout = httpx.Timeout(provider.timeout_s, connect=provider.connect_timeout_s)
    started = time.perf_counter()
    try:
        response = await client.post(
            provider.endpoint,
            content=orjson.dumps(request_body(provider.model, request)),
            headers=request_headers(secret),
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise transport_error(exc, secret) from None
    upstream_ms = (time.perf_counter() - started) * 1000
    if response.status_code >= 300:
        raise status_error(response.status_code, response.headers, response.content, secret)
    completion = parse_completion(response.content, provider.model, secret)
    completion.upstream_ms = upstream_ms
    if completion.raw is not None and not isinstance(completion.raw.get("usage"), dict):
        completion.usage = estimated_usage(request, completion.text)
    return completion


def parse_completion(content: bytes, fallback_model: str, secret: str | None = None) -> Completion:
    """Read an OpenAI chat.completion body; raises ProviderError(malformed) if it is not one."""
    try:
        data = orjson.loads(content)
        message = data["choices"][0]["message"]
        text = message.get("content") or ""
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        snippet = redact(content[:80].decode("utf-8", "replace"), secret)
        raise ProviderError(
            ErrorKind.MALFORMED, f"not an OpenAI chat completion (body starts {snippet!r})"
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
