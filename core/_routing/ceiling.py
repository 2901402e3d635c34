"""A cost ceiling per request: providers whose worst case would cost more are left out.

The ceiling is ``ChatRequest.max_cost``: from the ``x-modelbroker-max-cost`` header, a
surface's own field (``max_cost`` on /generate), or a plugin's ``admit`` (a client key's
default), the lowest winning. A provider's worst case for a request is its estimated
prompt tokens at the input price, plus the most it may write at the output price: the
request's ``max_tokens`` (or ``max_completion_tokens``), else ``ASSUMED_COMPLETION_TOKENS``.
"""

from __future__ import annotations

import math

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.errors import APIError
from modelbroker._routing.pricing import estimate_tokens
from modelbroker._routing.types import EMBEDDINGS, ChatRequest

HEADER = "x-modelbroker-max-cost"
#: The completion assumed for a request that sets no max_tokens (docs/cost.md).
ASSUMED_COMPLETION_TOKENS = 1024


def max_cost_of(value: str | None, current: float | None = None) -> float | None:
    """The ceiling a request asks for with the header (the lower of it and ``current``), or
    ``current`` without the header; APIError 400 for a value that is not a positive number."""
    if value is None:
        return current
    try:
        asked = float(value)
    except ValueError:
        asked = math.nan
    if not math.isfinite(asked) or asked <= 0:
        raise APIError(400, f"{HEADER} must be a positive number (the most this request may cost, in the "
                       "providers' price unit, USD for the catalogue's prices), such as 0.002",
                       code="invalid_max_cost", param=HEADER)
    return asked if current is None else min(asked, current)


def completion_bound(request: ChatRequest) -> int:
    """The most tokens ``request`` may be answered with, as far as the gateway can tell."""
    if request.kind == EMBEDDINGS:
        return 0
    asked = request.max_tokens or request.extra.get("max_completion_tokens")
    return asked if isinstance(asked, int) and asked > 0 else ASSUMED_COMPLETION_TOKENS


def worst_case(provider: ProviderConfig, prompt: int, completion: int) -> float:
    rates = provider.prices.rates(prompt)
    return (prompt * rates.input + completion * rates.output) / 1000 + rates.per_request


def within_ceiling(request: ChatRequest, providers: list[ProviderConfig]) -> list[ProviderConfig]:
    """``providers`` whose worst case fits ``request.max_cost``; APIError 400
    ``cost_limit_exceeded``, naming the cheapest, when none does."""
    ceiling = request.max_cost
    prompt = estimate_tokens(request.prompt_text())
    completion = completion_bound(request)
    costs = [(worst_case(p, prompt, completion), p) for p in providers]
    fitting = [p for cost, p in costs if cost <= ceiling]
    if fitting:
        return fitting
    cheapest, provider = min(costs, key=lambda pair: pair[0])
    raise APIError(400, f"no provider fits this request's cost ceiling of {ceiling:g}: the cheapest, "
                   f"{provider.id}, could cost up to {cheapest:.6g} ({prompt} prompt tokens estimated, "
                   f"{completion} completion tokens at most); raise the ceiling ({HEADER}, or the key's "
                   "default), or ask for fewer tokens with max_tokens", code="cost_limit_exceeded")
