"""plugins/priority.py: strategy ``priority``, lower first, ties in file order."""

from __future__ import annotations

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.types import ChatRequest
from modelbroker.plugins import priority
from modelbroker.testing import registered

REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}])


def make(name: str, prio: int) -> ProviderConfig:
    return ProviderConfig(name=name, endpoint="http://127.0.0.1:9/v1", model="m", priority=prio, cost_per_1k_tokens=1)


def test_strategy_name():
    assert registered(priority) == {"priority": priority.Priority}


def test_lower_first_ties_in_file_order():
    providers = [make("c", 3), make("z", 1), make("m", 2), make("a", 1), make("neg", -1)]
    order = priority.Priority().select_provider(providers)
    assert [p.name for p in order] == ["neg", "z", "a", "m", "c"]
    assert [p.name for p in providers] == ["c", "z", "m", "a", "neg"]  # the input list is left alone


def test_all_equal_keeps_file_order():
    providers = [make(n, 0) for n in "dcba"]
    assert [p.name for p in priority.Priority().select_provider(providers)] == list("dcba")


def test_empty():
    assert priority.Priority().select_provider([]) == []
