"""Strategies that read provider health: latency, balanced and slo (plugins/)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from modelbroker import GatewayConfig
from modelbroker._routing.types import ChatRequest
from modelbroker.plugins import balanced, latency, slo
from modelbroker.testing import registered

from ._support import config, make_provider


class FakeHealth:
    """The part of HealthTracker that strategies read, with set numbers."""

    def __init__(self, **rows: dict) -> None:
        self.rows = rows

    def _get(self, provider, key):
        return self.rows.get(provider.name, {}).get(key)

    def latency_ms(self, provider):
        return self._get(provider, "latency")

    def samples(self, provider):
        return self._get(provider, "samples") or 0

    def error_rate(self, provider):
        return self._get(provider, "error_rate")

    def p95_ms(self, provider):
        return self._get(provider, "p95")


def names(order) -> list[str]:
    return [p.name for p in order]


# --- latency --------------------------------------------------------------------------------


def test_latency_lowest_moving_average_first_untried_first():
    providers = [make_provider("slow", priority=1), make_provider("fast", priority=2),
                 make_provider("new_b", priority=4), make_provider("new_a", priority=3)]
    health = FakeHealth(slow={"latency": 300.0, "samples": 5}, fast={"latency": 40.0, "samples": 5})
    order = latency.Fastest().select_provider(providers, health)
    assert names(order) == ["new_a", "new_b", "fast", "slow"]


def test_latency_a_provider_that_only_failed_is_not_untried():
    providers = [make_provider("broken", priority=1), make_provider("fast", priority=2)]
    health = FakeHealth(broken={"latency": None, "samples": 4}, fast={"latency": 40.0, "samples": 5})
    order = latency.Fastest().select_provider(providers, health)
    assert names(order) == ["fast", "broken"]


def test_latency_registers_its_name():
    assert registered(latency) == {"latency": latency.Fastest}


def test_latency_through_the_gateway(gateway, provider, upstream):
    upstream.set_behavior("slow", {"kind": "ok", "delay_s": 0.4})
    upstream.set_behavior("medium", {"kind": "ok", "delay_s": 0.2})
    gw = gateway(config(provider("slow", priority=1), provider("medium", priority=2), provider("fast", priority=3),
                        strategy="latency"))
    first = [gw.generate({"prompt": "hi"}).json()["provider"] for _ in range(3)]
    assert first == ["slow/slow", "medium/medium", "fast/fast"], "each untried provider is measured first"
    later = [gw.generate({"prompt": "hi"}).json()["provider"] for _ in range(5)]
    assert later == ["fast/fast"] * 5


def test_latency_falls_back_past_a_failing_provider(gateway, provider, upstream):
    upstream.set_behavior("broken", {"kind": "status", "status": 500})
    gw = gateway(config(provider("broken", priority=1), provider("ok", priority=2), strategy="latency",
                        retries=0, failure_threshold=100))
    used = [gw.generate({"prompt": "hi"}).json()["provider"] for _ in range(4)]
    assert used == ["ok/ok"] * 4
    assert upstream.calls["broken"] == 1, "a provider that only ever failed kept coming first"


# --- balanced ---------------------------------------------------------------------------------


def test_weighted_order_first_choice_follows_the_weights():
    rng = random.Random(1234)
    providers = [make_provider("two", weight=2), make_provider("one_a"), make_provider("one_b")]
    firsts = Counter(balanced.weighted_order(providers, rng)[0].name for _ in range(4000))
    assert firsts["two"] / 4000 == pytest.approx(0.5, abs=0.04)
    assert firsts["one_a"] / 4000 == pytest.approx(0.25, abs=0.04)
    assert firsts["one_b"] / 4000 == pytest.approx(0.25, abs=0.04)


def test_weighted_order_spreads_the_fallback_too():
    rng = random.Random(99)
    providers = [make_provider("a"), make_provider("b"), make_provider("c")]
    seconds = Counter(balanced.weighted_order(providers, rng)[1].name for _ in range(3000))
    assert all(seconds[name] / 3000 == pytest.approx(1 / 3, abs=0.05) for name in "abc")


def test_balanced_keeps_priority_levels_in_order():
    providers = [make_provider("backup", priority=2, weight=100), make_provider("a", priority=1),
                 make_provider("b", priority=1)]
    for _ in range(50):
        order = names(balanced.Balanced().select_provider(providers))
        assert sorted(order[:2]) == ["a", "b"] and order[2] == "backup"


def test_balanced_through_the_gateway(gateway, provider, upstream):
    gw = gateway(config(provider("heavy", weight=3), provider("light", weight=1), provider("backup", priority=5),
                        strategy="balanced"))
    used = Counter(gw.generate({"prompt": "hi"}).json()["provider"] for _ in range(80))
    assert used["backup/backup"] == 0
    # Expected 60 / 20; these bounds are more than five standard deviations wide.
    assert 40 <= used["heavy/heavy"] <= 78 and used["light/light"] >= 2


def test_balanced_falls_back_within_the_level_then_to_the_next(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "status", "status": 500})
    gw = gateway(config(provider("a"), provider("b"), provider("backup", priority=5), strategy="balanced",
                        retries=0, failure_threshold=100))
    assert all(gw.generate({"prompt": "hi"}).json()["provider"] == "b/b" for _ in range(10))
    upstream.set_behavior("b", {"kind": "status", "status": 500})
    assert gw.generate({"prompt": "hi"}).json()["provider"] == "backup/backup"


# --- slo -------------------------------------------------------------------------------------------


def slo_order(providers, health, **bounds):
    config = GatewayConfig().with_plugin_settings({"slo": slo.SLOSettings(**bounds)})
    request = ChatRequest(messages=[{"role": "user", "content": "hello there"}])
    return names(slo.CheapestWithinObjective().select_provider(request, providers, health, config))


def test_slo_cheapest_within_the_objective():
    providers = [make_provider("pricey", cost_per_1k_tokens=0.01), make_provider("cheap", cost_per_1k_tokens=0.001),
                 make_provider("cheapest_slow", cost_per_1k_tokens=0.0001)]
    health = FakeHealth(
        pricey={"samples": 10, "error_rate": 0.0, "p95": 100.0},
        cheap={"samples": 10, "error_rate": 0.01, "p95": 300.0},
        cheapest_slow={"samples": 10, "error_rate": 0.0, "p95": 5000.0},
    )
    assert slo_order(providers, health, max_p95_ms=1000, max_error_rate=0.05) == ["cheap", "pricey", "cheapest_slow"]


def test_slo_error_rate_bound():
    providers = [make_provider("flaky", cost_per_1k_tokens=0.0001), make_provider("steady", cost_per_1k_tokens=0.01)]
    health = FakeHealth(flaky={"samples": 20, "error_rate": 0.2, "p95": 50.0},
                        steady={"samples": 20, "error_rate": 0.0, "p95": 50.0})
    assert slo_order(providers, health, max_error_rate=0.05) == ["steady", "flaky"]
    assert slo_order(providers, health, max_error_rate=0.5) == ["flaky", "steady"]


def test_slo_benefit_of_the_doubt_below_min_samples():
    providers = [make_provider("new", cost_per_1k_tokens=0.0001), make_provider("known", cost_per_1k_tokens=0.01)]
    health = FakeHealth(new={"samples": 2, "error_rate": 1.0, "p95": None},
                        known={"samples": 20, "error_rate": 0.0, "p95": 50.0})
    assert slo_order(providers, health, min_samples=5) == ["new", "known"]
    assert slo_order(providers, health, min_samples=2) == ["known", "new"]


def test_slo_none_meets_it_best_available_first():
    providers = [make_provider("worst", priority=1), make_provider("slow", priority=2), make_provider("best", priority=3)]
    health = FakeHealth(worst={"samples": 20, "error_rate": 0.5, "p95": 50.0},
                        slow={"samples": 20, "error_rate": 0.1, "p95": 9000.0},
                        best={"samples": 20, "error_rate": 0.1, "p95": 3000.0})
    assert slo_order(providers, health, max_error_rate=0.01, max_p95_ms=100) == ["best", "slow", "worst"]


def test_slo_defaults():
    assert slo.SLOSettings().model_dump() == {"max_p95_ms": 2000.0, "max_error_rate": 0.05, "min_samples": 5}
    assert registered(slo, "register_settings") == {"slo": slo.SLOSettings}


def test_slo_through_the_gateway(gateway, provider, upstream):
    upstream.set_behavior("cheap", {"kind": "ok", "delay_s": 0.12})
    gw = gateway(config(
        provider("cheap", cost_per_1k_tokens=0.0001), provider("pricey", cost_per_1k_tokens=0.01),
        strategy="slo", plugins={"slo": {"max_p95_ms": 80, "max_error_rate": 0.2, "min_samples": 3}},
    ))
    used = [gw.generate({"prompt": "hi"}).json()["provider"] for _ in range(6)]
    assert used == ["cheap/cheap"] * 3 + ["pricey/pricey"] * 3


def test_slo_through_the_gateway_error_rate(gateway, provider, upstream):
    upstream.set_behavior("cheap", {"kind": "status", "status": 500, "times": 2})
    gw = gateway(config(
        provider("cheap", cost_per_1k_tokens=0.0001), provider("pricey", cost_per_1k_tokens=0.01),
        strategy="slo", plugins={"slo": {"max_error_rate": 0.1, "min_samples": 2}},
        retries=0, failure_threshold=100,
    ))
    used = [gw.generate({"prompt": "hi"}).json()["provider"] for _ in range(4)]
    assert used == ["pricey/pricey"] * 4
    assert upstream.calls["cheap"] == 2
