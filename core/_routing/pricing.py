"""What an attempt costs, from a provider's prices and the tokens used."""

from __future__ import annotations

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.types import ChatRequest, Usage

#: Completion length assumed when estimating a request's cost before it runs.
DEFAULT_EXPECTED_COMPLETION_TOKENS = 256


def cost_of(provider: ProviderConfig, usage: Usage) -> float:
    """Cost of ``usage`` at ``provider``'s prices (``provider.prices``).

    With separate input and output prices (given, or the catalogue's), each token class is
    priced on its own: cached prompt tokens and reasoning tokens at their own prices where
    known, at the prompt size's tier and the time's price; with one ``cost_per_1k_tokens``,
    the total is.
    """
    return provider.prices.cost(usage)


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) for planning, never for billing."""
    return max(1, (len(text) + 3) // 4)


def estimated_cost(provider: ProviderConfig, request: ChatRequest) -> float:
    """What ``request`` would likely cost at ``provider``, used to rank providers by price:
    its estimated prompt tokens at the input price, and ``max_tokens`` (else
    ``DEFAULT_EXPECTED_COMPLETION_TOKENS``) at the output price."""
    prompt = estimate_tokens(request.prompt_text())
    completion = request.max_tokens or DEFAULT_EXPECTED_COMPLETION_TOKENS
    rates = provider.prices.rates(prompt)
    return (prompt * rates.input + completion * rates.output) / 1000 + rates.per_request


def estimated_usage(request: ChatRequest, completion_text: str) -> Usage:
    """Usage counted by the gateway when the upstream reported none; marked ``estimated``."""
    prompt = estimate_tokens(request.prompt_text())
    completion = estimate_tokens(completion_text) if completion_text else 0
    return Usage(prompt, completion, prompt + completion, estimated=True)
