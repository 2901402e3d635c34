"""core/_routing/router.py through a real gateway: the order providers are tried in, fallback, 502 and 503.

Every test runs the gateway on loopback in front of the session's FakeUpstream.
"""

from __future__ import annotations

import time

import pytest

ALL_FAIL = {"kind": "status", "status": 500}


def config(*providers: dict, **top) -> dict:
    """A config with ``providers`` and no retry: each test here counts attempts exactly."""
    return {"reliability": {"retries": 0}, **top, "providers": list(providers)}


def attempt_order(response) -> list[str]:
    """The provider ids of a 502 answer's attempts, in the order they were tried."""
    assert response.status_code == 502, response.text
    return [a["provider"] for a in response.json()["error"]["attempts"]]


# --- priority ---------------------------------------------------------------------------


def test_priority_lower_first_ties_in_file_order(gateway, provider, upstream):
    gw = gateway(config(
        provider("late", priority=3),
        provider("zeta", priority=1),
        provider("middle", priority=2),
        provider("alpha", priority=1),
    ))
    answer = gw.generate({"prompt": "hello"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "zeta/zeta"
    assert dict(upstream.calls) == {"zeta": 1}

    upstream.set_behavior("*", ALL_FAIL)
    assert attempt_order(gw.generate({"prompt": "hello"})) == ["zeta/zeta", "alpha/alpha", "middle/middle", "late/late"]


def test_priority_is_the_default_strategy_and_can_be_asked_for(gateway, provider, upstream):
    gw = gateway(config(
        provider("pricey", priority=1, cost_per_1k_tokens=1.0),
        provider("cheap", priority=2, cost_per_1k_tokens=0.1),
        strategy="cost",
    ))
    assert gw.generate({"prompt": "hi"}).json()["provider"] == "cheap/cheap"
    assert gw.generate({"prompt": "hi", "strategy": "priority"}).json()["provider"] == "pricey/pricey"


def test_negative_priority_comes_first(gateway, provider, upstream):
    gw = gateway(config(provider("zero"), provider("minus", priority=-5)))
    assert gw.generate({"prompt": "hi"}).json()["provider"] == "minus/minus"


# --- cost -------------------------------------------------------------------------------


def test_cost_cheapest_first(gateway, provider, upstream):
    gw = gateway(config(
        provider("three", cost_per_1k_tokens=0.03, priority=1),
        provider("one", cost_per_1k_tokens=0.01, priority=3),
        provider("two", cost_per_1k_tokens=0.02, priority=2),
        provider("free", cost_per_1k_tokens=0, priority=9),
        strategy="cost",
    ))
    assert gw.generate({"prompt": "hello"}).json()["provider"] == "free/free"
    upstream.set_behavior("*", ALL_FAIL)
    assert attempt_order(gw.generate({"prompt": "hello"})) == ["free/free", "one/one", "two/two", "three/three"]


def test_cost_ties_go_by_priority_then_file_order(gateway, provider, upstream):
    upstream.set_behavior("*", ALL_FAIL)
    gw = gateway(config(
        provider("b", cost_per_1k_tokens=0.01, priority=2),
        provider("c", cost_per_1k_tokens=0.01, priority=1),
        provider("a", cost_per_1k_tokens=0.01, priority=2),
        strategy="cost",
    ))
    assert attempt_order(gw.generate({"prompt": "hello"})) == ["c/c", "b/b", "a/a"]


def test_cost_uses_split_input_and_output_prices(gateway, provider, upstream):
    # cheap_in: prompts cost little, completions a lot; cheap_out: the reverse.
    gw = gateway(config(
        provider("cheap_in", cost_per_1k_input_tokens=0.001, cost_per_1k_output_tokens=0.1),
        provider("cheap_out", cost_per_1k_input_tokens=0.05, cost_per_1k_output_tokens=0.002),
    ))
    long_prompt = {"prompt": "word " * 500, "max_tokens": 10, "strategy": "cost"}
    short_prompt = {"prompt": "hi", "max_tokens": 1000, "strategy": "cost"}
    assert gw.generate(long_prompt).json()["provider"] == "cheap_in/cheap_in"
    assert gw.generate(short_prompt).json()["provider"] == "cheap_out/cheap_out"
    upstream.set_behavior("*", ALL_FAIL)
    assert attempt_order(gw.generate(long_prompt)) == ["cheap_in/cheap_in", "cheap_out/cheap_out"]
    assert attempt_order(gw.generate(short_prompt)) == ["cheap_out/cheap_out", "cheap_in/cheap_in"]


# --- fallback -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "behavior", "kind", "status"),
    [
        pytest.param("fail-500", None, "status", 500, id="500"),
        pytest.param("fail-429", None, "status", 429, id="429"),
        pytest.param("slow", None, "timeout", None, id="timeout"),
        pytest.param("malformed", None, "malformed", None, id="malformed-json"),
        pytest.param("drop", None, "connection", None, id="dropped-connection"),
        pytest.param("empty", "empty_choices", "malformed", None, id="empty-choices"),
        pytest.param("reset", "reset_mid_body", "connection", None, id="reset-mid-body"),
    ],
)
def test_fallback_to_the_next_provider(gateway, provider, upstream, first, behavior, kind, status):
    if behavior:
        upstream.set_behavior(first, behavior)
    gw = gateway(config(
        provider("first", model=first, priority=1, timeout_s=0.5),
        provider("second", model="ok-model", priority=2),
    ))
    started = time.monotonic()
    answer = gw.generate({"prompt": "hello"})
    assert time.monotonic() - started < 5
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["provider"] == "second/ok-model"
    assert body["modelUsed"] == "ok-model"
    assert body["attempts"] == 2
    assert answer.headers["x-modelbroker-attempts"] == "2"
    assert upstream.calls[first] == 1 and upstream.calls["ok-model"] == 1

    failed, succeeded = gw.log_lines()
    assert (failed["success"], failed["provider"], failed["error_kind"], failed["status"]) == (False, "first", kind, status)
    assert succeeded["success"] is True and succeeded["provider"] == "second"


def test_fallback_on_500_with_the_default_reliability_settings(gateway, provider, upstream):
    gw = gateway({"providers": [provider("first", model="fail-500", priority=1), provider("second", priority=2)]})
    answer = gw.generate({"prompt": "hello"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "second/second"
    assert upstream.calls["fail-500"] >= 1 and upstream.calls["second"] == 1
    lines = gw.log_lines()
    assert [line["success"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert all(line["provider"] == "first" and line["status"] == 500 for line in lines[:-1])
    assert int(answer.headers["x-modelbroker-attempts"]) == len(lines)


def test_fallback_on_refused_connection(gateway, provider, upstream, closed_port_url):
    gw = gateway(config(
        provider("gone", endpoint=closed_port_url, priority=1),
        provider("here", priority=2),
    ))
    answer = gw.generate({"prompt": "hello"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "here/here"
    failed, _ = gw.log_lines()
    assert failed["error_kind"] == "connect"
    assert failed["status"] is None


def test_timeout_is_bounded_by_timeout_s(gateway, provider, upstream):
    gw = gateway(config(provider("slowpoke", model="slow", timeout_s=0.3)))
    started = time.monotonic()
    answer = gw.generate({"prompt": "hello"})
    elapsed = time.monotonic() - started
    assert answer.status_code == 502
    assert answer.json()["error"]["attempts"][0]["error"] == "timeout"
    assert 0.25 < elapsed < 3


def test_success_stops_the_fallback(gateway, provider, upstream):
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2)))
    for _ in range(3):
        assert gw.generate({"prompt": "hello"}).json()["attempts"] == 1
    assert dict(upstream.calls) == {"a": 3}


def test_a_provider_recovering_is_used_again(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "status", "status": 503, "times": 1})
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2)))
    assert gw.generate({"prompt": "one"}).json()["provider"] == "b/b"
    assert gw.generate({"prompt": "two"}).json()["provider"] == "a/a"


# --- 502: every provider failed -------------------------------------------------------------


def test_all_fail_gives_502_listing_every_attempt(gateway, provider, upstream, closed_port_url):
    gw = gateway(config(
        provider("p500", model="fail-500", priority=1),
        provider("p503", model="fail-503", priority=2),
        provider("bad", model="malformed", priority=3),
        provider("gone", endpoint=closed_port_url, priority=4),
    ))
    answer = gw.generate({"prompt": "hello"})
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["code"] == "all_providers_failed"
    assert error["type"] == "upstream_error"
    summary = [(a["provider"], a["model"], a["error"], a.get("status")) for a in error["attempts"]]
    assert summary == [
        ("p500/fail-500", "fail-500", "status", 500),
        ("p503/fail-503", "fail-503", "status", 503),
        ("bad/malformed", "malformed", "malformed", None),
        ("gone/gone", "gone", "connect", None),
    ]
    assert all(a["ok"] is False and a["message"] for a in error["attempts"])
    assert error["message"].startswith("all 4 provider attempts failed: ")
    for part in ("p500/fail-500: status 500", "p503/fail-503: status 503", "bad/malformed: malformed", "gone/gone: connect"):
        assert part in error["message"]
    lines = gw.log_lines()
    assert [line["success"] for line in lines] == [False] * 4
    assert [line["attempt"] for line in lines] == [1, 2, 3, 4]


# --- 503: no provider usable ------------------------------------------------------------------


def test_503_when_every_provider_is_disabled_by_an_unset_variable(gateway, provider, upstream):
    gw = gateway(config(
        provider("a", api_key="${MB_TEST_UNSET_KEY_A}"),
        provider("b", api_key="${MB_TEST_UNSET_KEY_B}"),
    ))
    answer = gw.generate({"prompt": "hello"})
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "no_provider"
    assert error["type"] == "service_unavailable"
    assert "disabled" in error["message"]
    assert "MB_TEST_UNSET_KEY_A" in error["message"] and "MB_TEST_UNSET_KEY_B" in error["message"]
    assert upstream.calls == {}
    health = gw.get("/health").json()
    assert health["status"] == "no_provider"
    assert [p["enabled"] for p in health["providers"]] == [False, False]


def test_503_when_every_provider_is_switched_off(gateway, provider, upstream):
    gw = gateway(config(provider("a", enabled=False)))
    answer = gw.generate({"prompt": "hello"})
    assert answer.status_code == 503
    assert "a/a (enabled: false)" in answer.json()["error"]["message"]


@pytest.mark.parametrize("text", ["providers: []\n", "# nothing yet\n", "strategy: priority\n"])
def test_503_when_no_provider_is_configured(gateway, upstream, text):
    gw = gateway(text)
    answer = gw.generate({"prompt": "hello"})
    assert answer.status_code == 503
    message = answer.json()["error"]["message"]
    assert "no provider is configured" in message
    assert "providers:" in message


def test_503_with_the_shipped_providers_yaml_and_no_key(gateway, repo_root, upstream):
    gw = gateway((repo_root / "providers.yaml").read_text())
    answer = gw.generate({"prompt": "hello"})
    assert answer.status_code == 503
    assert "GROQ_API_KEY" in answer.json()["error"]["message"]
