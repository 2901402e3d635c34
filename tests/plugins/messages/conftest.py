"""Fixtures for the ``messages`` surface: a gateway whose first provider speaks Anthropic's
Messages API or OpenAI's chat format, and the official ``anthropic`` SDK pointed at it."""

from __future__ import annotations

import anthropic
import pytest

#: The fake upstream's model of each provider type, as the tests name it.
MODELS = {"anthropic": "claude-t", "gemini": "gemini-t", "openai": "gpt-t"}
TIMEOUT = 10.0


def sdk(gw, api_key: str = "client-key", **options) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=api_key, max_retries=0, timeout=TIMEOUT, **options)


def reply_of(kind: str, prompt: str) -> str:
    """What the fake upstream answers a provider of type ``kind``."""
    return f"Fake reply from {MODELS[kind]}: {prompt}"


@pytest.fixture
def messages_gateway(gateway, provider):
    """``messages_gateway(kind, *extra_providers, **fields)``: a gateway whose first provider
    (priority 1) is of type ``kind`` on the fake upstream; retries off, so fallbacks are immediate."""

    def start(kind: str, *extra: dict, settings: dict | None = None, **fields):
        first = provider(kind, model=MODELS[kind], type=kind, priority=1, **fields)
        return gateway({"providers": [first, *extra], "reliability": {"retries": 0}}, **(settings or {}))

    return start


@pytest.fixture(params=sorted(MODELS))
def kind(request) -> str:
    """Each test that takes it runs against an Anthropic provider (native pass-through), a
    Gemini one and an OpenAI one (both translated through the chat format)."""
    return request.param
