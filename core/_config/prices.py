"""A provider's prices, worked out once when providers.yaml is read.

The prices come from providers.yaml when it gives them, else from the catalogue
(``catalogue.py``, pydantic's genai-prices), else they are unknown and cost 0. Either way
``Prices`` is a small table: the rates per 1,000 tokens, by prompt size (tiered prices) and,
for a catalogue price that changes on a date or by the time of day, by when. Reading it on
each attempt is a few comparisons; the catalogue itself is never read after startup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

#: Where prices given in providers.yaml come from, as ``modelbroker check`` shows it.
PROVIDERS_YAML = "providers.yaml"
#: The source of a provider whose price no one knows.
UNKNOWN = "unknown: costs 0"


@dataclass(frozen=True, slots=True)
class Rates:
    """Prices of 1,000 tokens of each class. ``cached_input``: prompt tokens read from the
    upstream's cache (None: at ``input``); ``reasoning``: completion tokens spent reasoning
    (None: at ``output``); ``per_request``: a fixed price per call."""

    input: float
    output: float
    cached_input: float | None = None
    reasoning: float | None = None
    per_request: float = 0.0

    def cost(self, prompt: int, completion: int, cached: int | None, reasoning: int | None) -> float:
        """The cost of one attempt's tokens at these rates."""
        total = prompt * self.input + completion * self.output
        if cached and self.cached_input is not None:
            total -= min(cached, prompt) * (self.input - self.cached_input)
        if reasoning and self.reasoning is not None:
            total -= min(reasoning, completion) * (self.output - self.reasoning)
        return total / 1000 + self.per_request


#: Rates by prompt size: ``(start, rates)`` ascending, the first with start -1; a prompt of
#: more than ``start`` tokens pays ``rates`` for every token (the vendors' "cliff" tiers).
Tiers = tuple[tuple[int, Rates], ...]


@dataclass(frozen=True, slots=True)
class Prices:
    """What a provider's tokens cost, and where that was learnt (``source``).

    ``tiers`` are the rates in force; ``dated``, for a catalogue price that changes over time,
    holds ``(active, tiers)`` pairs where ``active(now)`` says whether they apply, the last
    active one winning (and the first when none is). ``per_total`` is set when providers.yaml
    gives one ``cost_per_1k_tokens``: then an attempt costs its ``total_tokens`` at it, as the
    upstream counted them.
    """

    tiers: Tiers
    source: str = PROVIDERS_YAML
    known: bool = True
    per_total: float | None = None
    dated: tuple[tuple[Callable[[datetime], bool], Tiers], ...] = ()
    #: For ``dated``: the tiers in force and until when (``time.time()``), so that the clock is
    #: read, and the constraints checked, once a minute rather than on every attempt.
    _now: list = field(default_factory=lambda: [0.0, ()], compare=False, repr=False)

    @classmethod
    def flat(cls, rates: Rates, source: str = PROVIDERS_YAML, *, known: bool = True,
             per_total: float | None = None) -> Prices:
        return cls(((-1, rates),), source, known, per_total)

    def rates(self, prompt_tokens: int = 0, now: datetime | None = None) -> Rates:
        """The rates for a prompt of ``prompt_tokens`` sent at ``now`` (default: this moment)."""
        if not self.dated:
            tiers = self.tiers
        elif now is not None:
            tiers = self.tiers_at(now)
        else:
            tiers = self._tiers_now()
        if len(tiers) == 1:
            return tiers[0][1]
        for start, rates in reversed(tiers):
            if prompt_tokens > start:
                return rates
        return tiers[0][1]

    def _tiers_now(self) -> Tiers:
        now_s = time.time()
        until, tiers = self._now
        if now_s >= until:
            # The vendors' prices change on a date or at a time of day, on a whole minute.
            tiers = self.tiers_at(datetime.fromtimestamp(now_s, timezone.utc))
            self._now[:] = [(now_s // 60 + 1) * 60, tiers]
        return tiers

    def tiers_at(self, now: datetime) -> Tiers:
        for active, tiers in reversed(self.dated):
            if active(now):
                return tiers
        return self.dated[0][1]

    def cost(self, usage: Any, now: datetime | None = None) -> float:
        """The cost of ``usage`` (a ``Usage``): prompt, completion, cached and reasoning tokens."""
        if self.per_total is not None:
            total = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
            return total * self.per_total / 1000
        rates = self.rates(usage.prompt_tokens, now)
        return rates.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens)


def given_prices(total: float | None, split: Sequence[float | None], cached: float | None) -> Prices:
    """The prices providers.yaml gives: one ``cost_per_1k_tokens``, or input and output (the
    split wins), and optionally a cached-input price."""
    if split[0] is not None and split[1] is not None:
        return Prices.flat(Rates(split[0], split[1], cached))
    price = total or 0.0
    return Prices.flat(Rates(price, price, cached), per_total=price if cached is None else None)


UNPRICED = Prices.flat(Rates(0.0, 0.0), UNKNOWN, known=False)
