"""Strategy ``prompt_size``: long prompts to a large model, short ones to a small, cheap one.

A prompt is *long* when its estimated size reaches ``threshold_tokens`` (default
500), read on every request from providers.yaml::

    strategy: prompt_size
    plugins:
      prompt_size:
        threshold_tokens: 500

The prompt's size is the gateway's own estimate, about four characters a token
(``modelbroker._routing.pricing.estimate_tokens``), taken over the text of all messages.

A provider's *size* is its ``context_window`` (a provider without one counts as
0); between equal context windows, the one with the higher price (input plus
output price per 1k tokens) is the larger. A short prompt tries the providers
from the smallest to the largest, a long one from the largest to the smallest,
so the other end of the list is the fallback. Equal sizes go by ``priority``,
then file order.
"""

from __future__ import annotations

import functools
import logging

from modelbroker._config.providers import GatewayConfig, ProviderConfig
from modelbroker._routing.pricing import estimate_tokens
from modelbroker._routing.types import ChatRequest
from modelbroker.hookspecs import hookimpl

NAME = "prompt_size"
DEFAULT_THRESHOLD = 500

log = logging.getLogger("modelbroker.prompt_size")


@hookimpl
def strategy_names() -> list[str]:
    return [NAME]


@hookimpl
def on_startup(config: GatewayConfig) -> None:
    """Refuse to start with a bad ``threshold_tokens`` (the message names the setting)."""
    threshold(config)


@hookimpl
def select_provider(
    request: ChatRequest, providers: list[ProviderConfig], strategy: str, config: GatewayConfig
) -> list[ProviderConfig] | None:
    if strategy != NAME:
        return None  # another plugin's strategy: decline at once
    try:
        limit = threshold(config)
    except ValueError as exc:  # startup refuses it, but a reload or `modelbroker check` may bring it
        _warn_once(f"{exc}; using {DEFAULT_THRESHOLD}")
        limit = DEFAULT_THRESHOLD
    return order(providers, long=is_long(request, limit))


def threshold(config: GatewayConfig) -> int:
    """``plugins.prompt_size.threshold_tokens``, or the default; ValueError if it is not a count."""
    value = config.plugins.settings_for(NAME).get("threshold_tokens", DEFAULT_THRESHOLD)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"plugins.{NAME}.threshold_tokens must be a whole number above 0, got {value!r}")
    return value


def is_long(request: ChatRequest, threshold_tokens: int) -> bool:
    return estimate_tokens(request.prompt_text()) >= threshold_tokens


def size(provider: ProviderConfig) -> tuple[int, float]:
    """What makes a provider *large*: its context window first, then its price."""
    return provider.context_window or 0, provider.input_price + provider.output_price


def order(providers: list[ProviderConfig], *, long: bool) -> list[ProviderConfig]:
    """Smallest first for a short prompt, largest first for a long one; ties by priority."""

    def key(provider: ProviderConfig) -> tuple[float, float, int]:
        window, price = size(provider)
        return (-window, -price, provider.priority) if long else (window, price, provider.priority)

    return sorted(providers, key=key)


@functools.lru_cache(maxsize=8)
def _warn_once(message: str) -> None:
    log.warning("%s", message)
