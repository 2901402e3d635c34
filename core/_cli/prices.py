"""What ``modelbroker check`` prints about prices: each provider's, and where it came from."""

from __future__ import annotations

from modelbroker._cli.tables import format_table
from modelbroker._config.providers import ProviderConfig

HEADER = ["provider", "input", "output", "cached input", "source"]


def describe_prices(providers: list[ProviderConfig]) -> str:
    """A table of the prices per 1M tokens (a short prompt's, at this moment), with a note for
    prices that change with the prompt's size or the time."""
    rows = []
    for p in providers:
        prices, rates = p.prices, p.prices.rates()
        cached = rates.cached_input if rates.cached_input is not None else rates.input
        source = prices.source
        if len(prices.tiers) > 1:
            source += "; more above " + ", ".join(f"{start:,}" for start, _ in prices.tiers[1:]) + " prompt tokens"
        if prices.dated:
            source += "; varies by date or time of day"
        rows.append([p.id, _per_1m(rates.input), _per_1m(rates.output), _per_1m(cached), source])
    return "Prices per 1M tokens:\n" + format_table(rows, HEADER)


def _per_1m(per_1k: float) -> str:
    return f"{per_1k * 1000:.6g}"
