"""Prices from a maintained catalogue: pydantic's genai-prices, as installed.

Only the data bundled with the package is read (``genai_prices.data``), once, when a
provider without a price in providers.yaml is first validated: never the network (the
package can fetch newer prices in a thread, ``UpdatePrices``, which the gateway never
starts), and never on a request. A provider's vendor is its ``vendor:`` field, else the one
whose API address the endpoint's matches (genai-prices' own patterns: api.openai.com,
api.anthropic.com, *.googleapis.com, api.groq.com...). An endpoint elsewhere (a local
model, a proxy) has no vendor unless ``vendor:`` names one, and no known price.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

from modelbroker._config.prices import UNPRICED, Prices, Rates, Tiers

#: genai-prices' price keys (USD per million tokens) for each class of token.
_KEYS = {"input": "input_mtok", "output": "output_mtok", "cached_input": "cache_read_mtok",
         "reasoning": "output_reasoning_mtok"}


@functools.cache
def _catalogue() -> tuple[str, Any]:
    """genai-prices' version and its bundled data, read once."""
    from genai_prices import __version__
    from genai_prices.data import providers
    from genai_prices.data_snapshot import DataSnapshot

    return __version__, DataSnapshot(providers=providers, from_auto_update=False)


def version() -> str:
    return _catalogue()[0]


def vendors() -> list[str]:
    """Every vendor id the catalogue knows."""
    return sorted(provider.id for provider in _catalogue()[1].providers)


def find_vendor(vendor: str) -> str | None:
    """The catalogue's id for ``vendor`` (an id, or a name it knows the vendor by), or None."""
    from genai_prices.data_snapshot import find_provider_by_id

    found = find_provider_by_id(_catalogue()[1].providers, vendor)
    return found.id if found is not None else None


@functools.cache
def lookup(model: str, vendor: str | None, endpoint: str) -> tuple[Prices, str]:
    """The prices of ``model`` at ``vendor`` (else the vendor the endpoint's address names),
    and why they are unknown when they are (empty when they are known)."""
    _, snapshot = _catalogue()
    try:
        provider = snapshot.find_provider(None, vendor, None if vendor else endpoint)
    except LookupError:
        return UNPRICED, "no vendor (the endpoint's address is none genai-prices knows; vendor: names one)"
    found = provider.find_model(model, all_providers=snapshot.providers)
    if found is None:
        return UNPRICED, f"genai-prices {version()} does not know model {model!r} of vendor {provider.id!r}"
    source = f"genai-prices {version()} ({provider.id}/{found.id})"
    if isinstance(found.prices, list):
        dated = tuple((_active(c.constraint), _tiers(c.prices)) for c in found.prices)
        return Prices(dated[-1][1], source, dated=dated), ""
    return Prices(_tiers(found.prices), source), ""


def _active(constraint: Any) -> Any:
    return constraint.active if constraint is not None else _always


def _always(now: Any) -> bool:
    return True


def _tiers(model_price: Any) -> Tiers:
    """A ModelPrice as rates per 1,000 tokens by prompt size: each tiered price's thresholds
    (genai-prices tiers by the prompt's input tokens) split the table."""
    prices = {name: getattr(model_price, key, None) for name, key in _KEYS.items()}
    starts = sorted({tier.start for price in prices.values() if hasattr(price, "tiers") for tier in price.tiers})
    per_request = getattr(model_price, "requests_kcount", None)
    table = []
    for start in [-1, *starts]:
        at = {name: _per_1k(price, start) for name, price in prices.items()}
        table.append((start, Rates(at["input"] or 0.0, at["output"] or 0.0, at["cached_input"], at["reasoning"],
                                   float(per_request) / 1000 if per_request is not None else 0.0)))
    return tuple(table)


def _per_1k(price: Any, prompt_above: int) -> float | None:
    """A price per million tokens (flat, or tiered: the tier a prompt of more than
    ``prompt_above`` tokens pays) as a price per 1,000 tokens."""
    if price is None:
        return None
    if isinstance(price, Decimal):
        return float(price / 1000)
    rate = price.base
    for tier in price.tiers:
        if prompt_above >= tier.start:
            rate = tier.price
    return float(rate / 1000)
