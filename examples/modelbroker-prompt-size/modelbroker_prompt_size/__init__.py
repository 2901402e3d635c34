"""Strategy ``prompt_size``: long prompts to a large model, short ones to a small, cheap one.

A prompt is *long* when its estimated size reaches ``threshold_tokens`` (default
500), read on every request from providers.yaml, so a reload applies it::

    strategy: prompt_size
    plugins:
      prompt_size:
        threshold_tokens: 500

The block is declared with a pydantic model (``PromptSizeSettings``): the gateway
validates it when it starts, in ``modelbroker check`` and on every reload, and a bad
value is told as providers.yaml's own mistakes are
(``providers.yaml: plugins.prompt_size.threshold_tokens: must be >= 1``).

The prompt's size is the gateway's own estimate, about four characters a token
(``modelbroker.estimate_tokens``), taken over the text of all messages.

A provider's *size* is its ``context_window`` (a provider without one counts as
0); between equal context windows, the one with the higher price (input plus
output price per 1k tokens) is the larger. A short prompt tries the providers
from the smallest to the largest, a long one from the largest to the smallest,
so the other end of the list is the fallback. Equal sizes go by ``priority``,
then file order.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from modelbroker import ChatRequest, GatewayConfig, ProviderConfig, estimate_tokens, hookimpl

NAME = "prompt_size"


class PromptSizeSettings(BaseModel):
    """``plugins: prompt_size:``."""

    model_config = ConfigDict(extra="forbid")

    threshold_tokens: StrictInt = Field(default=500, ge=1)


class PromptSize:
    """The strategy: built by the gateway from its config, asked once per request."""

    def select_provider(self, request: ChatRequest, providers: list[ProviderConfig],
                        config: GatewayConfig) -> list[ProviderConfig]:
        threshold = config.plugins.settings_for(NAME).threshold_tokens
        return order(providers, long=is_long(request, threshold))


@hookimpl
def register_settings(register):
    register(NAME, PromptSizeSettings)


@hookimpl
def register_strategies(register):
    register(NAME, PromptSize)


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
