"""What a request needs of a provider, and what each provider can carry.

A request's features are read from its OpenAI chat fields (``extra``) and its messages:
``tools``, ``parallel_tool_calls``, ``json_object``, ``json_schema``, ``images``, ``n``
(more than one choice), ``seed``, ``logprobs``, ``audio``. An adapter states the
features it can carry (``features`` on the adapter object; an adapter without it
passes every field through, as OpenAI-compatible ones do), and a provider entry may
narrow or widen that (``capabilities:`` in providers.yaml: ``{tools: false}`` for a
model without tool calling, ``{images: true}`` for one with vision).

The router skips a provider that cannot carry what the request needs (a skip, not a
failure: the provider's health is untouched), and when none can, the request is
refused with 400 naming the feature and the providers that lack it. Nothing is dropped
silently. Only requests that reach a provider with a narrower set pay for the check.

A request that only its own wire format can carry (``Native.required``: a server tool
of Anthropic's, say) needs one more feature, named by that format; an adapter that
speaks it natively lists the format among its ``features``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

TOOLS = "tools"
PARALLEL_TOOL_CALLS = "parallel_tool_calls"
JSON_OBJECT = "json_object"
JSON_SCHEMA = "json_schema"
IMAGES = "images"
N = "n"
SEED = "seed"
LOGPROBS = "logprobs"
AUDIO = "audio"

#: Every feature a request may need, in the order messages name them.
FEATURES = (TOOLS, PARALLEL_TOOL_CALLS, JSON_OBJECT, JSON_SCHEMA, IMAGES, N, SEED, LOGPROBS, AUDIO)
ALL_FEATURES = frozenset(FEATURES)


def request_features(request: Any) -> frozenset[str]:
    """The features ``request`` (a ``ChatRequest``) needs of the provider that answers it."""
    extra = request.extra
    found: set[str] = set()
    native = request.native
    if native is not None and native.required:
        found.add(native.format)
    if extra:
        if extra.get("tools"):
            found.add(TOOLS)
            if extra.get("parallel_tool_calls") is True:
                found.add(PARALLEL_TOOL_CALLS)
        response_format = extra.get("response_format")
        if isinstance(response_format, dict):
            kind = response_format.get("type")
            if kind == JSON_OBJECT:
                found.add(JSON_OBJECT)
            elif kind == JSON_SCHEMA:
                found.add(JSON_SCHEMA)
        n = extra.get("n")
        if isinstance(n, int) and n > 1:
            found.add(N)
        if extra.get("seed") is not None:
            found.add(SEED)
        if extra.get("logprobs") or extra.get("top_logprobs"):
            found.add(LOGPROBS)
        if extra.get("audio") or "audio" in (extra.get("modalities") or ()):
            found.add(AUDIO)
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    kind = part.get("type")
                    if kind == "image_url":
                        found.add(IMAGES)
                    elif kind in ("input_audio", "audio"):
                        found.add(AUDIO)
    return frozenset(found)


def provider_features(adapter_features: Iterable[str] | None, capabilities: dict[str, bool]) -> frozenset[str]:
    """What a provider can carry: its adapter's features (all, if it states none), with the
    provider entry's ``capabilities:`` applied (true adds a feature, false removes it)."""
    features = set(ALL_FEATURES if adapter_features is None else adapter_features)
    for feature, able in capabilities.items():
        if able:
            features.add(feature)
        else:
            features.discard(feature)
    return frozenset(features)
