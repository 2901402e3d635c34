"""What an attempt costs, from a provider's prices and the tokens used."""

from __future__ import annotations

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.types import ChatRequest, Usage

#: Completion length assumed when estimating a request's cost before it runs.
DEFAULT_EXPECTED_COMPLETION_TOKENS = 256


def cost_of(provider: ProviderConfig, usage: Usage) -> float:
    """Cost of ``usage`` at ``provider``'s prices.

    With separate input and output prices, each token class is priced on its
    own; with one ``cost_per_1k_tokens``, the total is.
    """
    if provider.cost_per_1k_input_tokens is not None:
        return (
            usage.prompt_tokens * provider.input_price
            + usage.completion_tokens * provider.output_price
        ) / 1000
    total = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
    return total * (provider.cost_per_1k_tokens or 0.0) / 1000


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) for planning, never for billing."""
    return max(1, (len(text) + 3) // 4)


def estimated_cost(provider: ProviderConfig, request: ChatRequest) -> float:
    """What ``request`` would likely cost at ``provider``, used to rank providers by price."""
    prompt = estimate_tokens(request.prompt_text())
    completion = request.max_tokens or DEFAULT_EXPECTED_COMPLETION_TOKENS
    return (prompt * provider.input_price + completion * provider.output_price) / 1000


def estimated_usage(request: ChatRequest, completion_text: str) -> Usage:
    """Usage counted by the gateway when the upstream reported none; marked ``estimated``."""
    prompt = estimate_tokens(request.prompt_text())
    completion = estimate_tokens(completion_text) if completion_text else 0
    return Usage(prompt, completion, prompt + completion, estimated=True)
