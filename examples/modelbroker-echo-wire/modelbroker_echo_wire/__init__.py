"""Adapter ``type: echowire``: providers that speak EchoWire, a one-text-in, one-text-out format.

EchoWire is made up for this example; README.md spells it out::

    POST <endpoint>                          x-echowire-key: <api_key>
    {"input": "...", "model": "...", "max_out": 256}
    -> 200 {"output": "...", "used": {"in": 12, "out": 30}}
    -> 4xx/5xx {"error": {"code": "...", "message": "..."}}

EchoWire has no roles, so ``input`` is the text of all messages, joined by
newlines. ``max_out`` is the request's ``max_tokens``, else ``options.max_out``,
else left out. EchoWire cannot stream: the adapter always answers whole, and the
gateway sends that answer to a streaming client as one chunk.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.types import ChatRequest, Completion, ErrorKind, ProviderError, Usage
from modelbroker._upstream.errors import rate_limit_of, redact, status_error, transport_error
from modelbroker.hookspecs import hookimpl

TYPE = "echowire"
KEY_HEADER = "x-echowire-key"


@hookimpl
def adapter_types() -> list[str]:
    return [TYPE]


@hookimpl
def call_provider(provider: ProviderConfig, request: ChatRequest, client: httpx.AsyncClient):
    if provider.type != TYPE:
        return None  # not ours: decline at once, without I/O
    return complete(provider, request, client)  # a coroutine; the core awaits it


def request_body(provider: ProviderConfig, request: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"input": request.prompt_text(), "model": provider.model}
    max_out = request.max_tokens if request.max_tokens is not None else provider.options.get("max_out")
    if max_out is not None:
        body["max_out"] = max_out
    return body


async def complete(provider: ProviderConfig, request: ChatRequest, client: httpx.AsyncClient) -> Completion:
    """One EchoWire call; raises ProviderError (never holding the key) for every failure."""
    secret = provider.api_key.get_secret_value() if provider.api_key else None
    started = time.perf_counter()
    try:
        response = await client.post(
            provider.endpoint,
            json=request_body(provider, request),
            headers={KEY_HEADER: secret} if secret else {},
            timeout=httpx.Timeout(provider.timeout_s, connect=provider.connect_timeout_s),
        )
    except httpx.HTTPError as exc:
        raise transport_error(exc, secret) from None
    upstream_ms = (time.perf_counter() - started) * 1000
    if response.status_code >= 300:
        raise status_error(response.status_code, response.headers, response.content, secret)
    text, used_in, used_out = parse_reply(response.content, secret)
    return Completion(
        text=text,
        model=provider.model,  # EchoWire does not say which model answered
        usage=Usage(used_in, used_out, used_in + used_out),
        raw=None,  # not an OpenAI body: /v1/chat/completions builds one from text and usage
        upstream_ms=upstream_ms,
        rate_limit=rate_limit_of(response.headers),
    )


def parse_reply(content: bytes, secret: str | None = None) -> tuple[str, int, int]:
    """``(output, used.in, used.out)`` from a 2xx body; ProviderError ``malformed`` otherwise."""
    try:
        data = json.loads(content)
        text, used_in, used_out = data["output"], data["used"]["in"], data["used"]["out"]
    except (ValueError, KeyError, TypeError):
        text = used_in = used_out = None
    counts_ok = all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (used_in, used_out))
    if not isinstance(text, str) or not counts_ok:
        shown = redact(content[:120].decode("utf-8", "replace"), secret)
        raise ProviderError(ErrorKind.MALFORMED, f"not an EchoWire reply: {shown}")
    return text, used_in, used_out
