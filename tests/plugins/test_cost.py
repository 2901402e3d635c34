"""plugins/cost.py: strategy ``cost``, cheapest first for the request at hand."""

from __future__ import annotations

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.types import ChatRequest
from modelbroker.plugins import cost
from modelbroker.testing import registered


def make(name: str, *, price=None, prices=None, prio: int = 0) -> ProviderConfig:
    fields = {"cost_per_1k_tokens": price} if prices is None else {
        "cost_per_1k_input_tokens": prices[0], "cost_per_1k_output_tokens": prices[1]}
    return ProviderConfig(name=name, endpoint="http://127.0.0.1:9/v1", model="m", priority=prio, **fields)


def request(prompt: str = "hi", max_tokens: int | None = None) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens)


def order(providers, req=None) -> list[str]:
    return [p.name for p in cost.Cheapest().select_provider(req or request(), providers)]


def test_strategy_name():
    assert registered(cost) == {"cost": cost.Cheapest}


def test_cheapest_first():
    assert order([make("mid", price=0.02), make("dear", price=0.5), make("free", price=0), make("low", price=0.01)]) == [
        "free", "low", "mid", "dear"]


def test_ties_by_priority_then_file_order():
    providers = [make("b", price=0.01, prio=2), make("c", price=0.01, prio=1), make("a", price=0.01, prio=2)]
    assert order(providers) == ["c", "b", "a"]


def test_split_prices_depend_on_the_request():
    cheap_in = make("cheap_in", prices=(0.001, 0.1))
    cheap_out = make("cheap_out", prices=(0.05, 0.002))
    flat = make("flat", price=0.03)
    long_prompt_short_answer = request("word " * 2000, max_tokens=5)
    short_prompt_long_answer = request("hi", max_tokens=4000)
    assert order([cheap_out, flat, cheap_in], long_prompt_short_answer) == ["cheap_in", "flat", "cheap_out"]
    assert order([cheap_in, flat, cheap_out], short_prompt_long_answer) == ["cheap_out", "flat", "cheap_in"]



def test_prices_from_the_catalogue_order_too():
    def priced_by_catalogue(model: str) -> ProviderConfig:
        return ProviderConfig(name=model, endpoint="http://127.0.0.1:9/v1", model=model, vendor="openai")

    providers = [priced_by_catalogue("gpt-4o"), make("flat", price=0.001), priced_by_catalogue("gpt-4o-mini")]
    assert order(providers, request("word " * 100, max_tokens=100)) == ["gpt-4o-mini", "flat", "gpt-4o"]
