"""Which requests the cache answers, and the key of each: one hash of what shapes the answer."""

from __future__ import annotations

import hashlib

import orjson

from modelbroker import ChatRequest, Principal

HIT, MISS, BYPASS = "hit", "miss", "bypass"
HEADER = "x-modelbroker-cache"


def cacheable(request: ChatRequest, cache_all: bool) -> bool:
    """Embeddings always; a chat answer when it is meant to be repeatable (``temperature`` 0
    or a ``seed``), or always with ``cache_all``."""
    if request.kind == "embeddings" or cache_all:
        return True
    return request.temperature == 0 or request.extra.get("seed") is not None


def directives(cache_control: str | None) -> frozenset[str]:
    """The client's ``Cache-Control`` directives, in lower case (``no-cache``, ``no-store``)."""
    if not cache_control:
        return frozenset()
    return frozenset(part.strip().lower() for part in cache_control.split(","))


def cache_key(request: ChatRequest, principal: Principal | None, shared: bool) -> str:
    """sha256 of everything that shapes the answer, as the client asked: the surface, the
    model or strategy asked for (not the provider the router would pick), the messages or
    input, every other field (tools, tool_choice, response_format, sampling parameters,
    ...), whether it streams, the native body, and the client key unless ``shared``."""
    native = request.native
    parts = (
        request.surface, request.kind, request.model, request.strategy, request.stream, request.max_tokens,
        request.temperature, request.messages, request.extra, native.body if native is not None else None,
        None if shared or principal is None else principal.name,
    )
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)).hexdigest()
