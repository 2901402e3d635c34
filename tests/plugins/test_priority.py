"""plugins/priority.py: strategy ``priority``, lower first, ties in file order."""

from __future__ import annotations

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.types import ChatRequest
from modelbroker.plugins import priority

REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}])


def make(name: str, prio: int) -> ProviderConfig:
    return ProviderConfig(name=name, endpoint="http://127.0.0.1:9/v1", model="m", priority=prio, cost_per_1k_tokens=1)


def test_strategy_name():
    assert priority.strategy_names() == ["priority"]


def test_lower_first_ties_in_file_order():
    providers = [make("c", 3), make("z", 1), make("m", 2), make("a", 1), make("neg", -1)]
    order = priority.select_provider(providers=providers, strategy="priority")
    assert [p.name for p in order] == ["neg", "z", "a", "m", "c"]
    assert [p.name for p in providers] == ["c", "z", "m", "a", "neg"]  # the input list is left alone


def test_all_equal_keeps_file_order():
    providers = [make(n, 0) for n in "dcba"]
    assert [p.name for p in priority.select_provider(providers=providers, strategy="priority")] == list("dcba")


def test_other_strategies_are_not_its_business():
    assert priority.select_provider(providers=[make("a", 1)], strategy="cost") is None


def test_empty():
    assert priority.select_provider(providers=[], strategy="priority") == []
