"""Retries on the same provider, backoff, Retry-After, quota, context length, and what the
client is told when every option is exhausted (core/_routing/router.py, core/_server/app.py)."""

from __future__ import annotations

import email.utils
import time

import pytest

from modelbroker._config.providers import GatewayConfig
from modelbroker._routing.policy import is_transient
from modelbroker._routing.router import _Run
from modelbroker._routing.types import ChatRequest, ErrorKind, ProviderError
from modelbroker._upstream.errors import retry_after_seconds, status_error

from ._support import config, failure, health_row, make_provider, make_router, status_failure

TRANSIENT = [408, 409, 429, 500, 502, 503, 504, 529]
NOT_RETRIED = [400, 401, 403, 404, 422]


def fails(status: int, times: int | None = None, **fields) -> dict:
    behavior = {"kind": "status", "status": status, **fields}
    if times is not None:
        behavior["times"] = times
    return behavior


# --- which failures are transient -------------------------------------------------------------


@pytest.mark.parametrize("status", TRANSIENT)
def test_transient_statuses(status):
    assert is_transient(status_failure(status))


@pytest.mark.parametrize("status", [*NOT_RETRIED, 413])
def test_other_statuses_are_not_transient(status):
    assert not is_transient(status_failure(status))


@pytest.mark.parametrize("kind", [ErrorKind.TIMEOUT, ErrorKind.CONNECT, ErrorKind.CONNECTION])
def test_transport_failures_are_transient(kind):
    assert is_transient(failure(kind))


@pytest.mark.parametrize("kind", [ErrorKind.MALFORMED, ErrorKind.PLUGIN, ErrorKind.ERROR_EVENT, ErrorKind.CANCELLED])
def test_other_failures_are_not_transient(kind):
    assert not is_transient(failure(kind))


def test_exhausted_quota_is_not_transient():
    assert not is_transient(status_failure(429, code="insufficient_quota"))


# --- the backoff schedule ---------------------------------------------------------------------


def pauses(monkeypatch, jitter: float, retries: int = 4, **reliability) -> list[float | None]:
    """The pauses the router would take between attempts at one provider, jitter fixed."""
    monkeypatch.setattr("modelbroker._routing.policy.random.uniform", lambda low, high: low + (high - low) * jitter)
    gateway_config = GatewayConfig(reliability=reliability)
    router = make_router(gateway_config)
    provider = make_provider("p", retries=retries)
    run = _Run(ChatRequest(messages=[]), time.monotonic() + 1000)
    return [router._retry_pause(run, provider, status_failure(503), left, []) for left in range(retries, -1, -1)]


def test_backoff_doubles_from_half_a_second(monkeypatch):
    assert pauses(monkeypatch, jitter=1.0) == [0.5, 1.0, 2.0, 4.0, None]


def test_backoff_is_capped_at_eight_seconds(monkeypatch):
    assert pauses(monkeypatch, jitter=1.0, backoff_initial_s=3.0) == [3.0, 6.0, 8.0, 8.0, None]


def test_backoff_jitter_takes_up_to_half_off(monkeypatch):
    assert pauses(monkeypatch, jitter=0.0) == [0.25, 0.5, 1.0, 2.0, None]


def test_no_pause_that_would_end_past_the_deadline(monkeypatch):
    monkeypatch.setattr("modelbroker._routing.policy.random.uniform", lambda low, high: high)
    gateway_config = GatewayConfig()
    router = make_router(gateway_config)
    run = _Run(ChatRequest(messages=[]), time.monotonic() + 0.4)
    assert router._retry_pause(run, make_provider("p"), status_failure(503), 1, []) is None


# --- retries through the gateway --------------------------------------------------------------


@pytest.mark.parametrize("status", TRANSIENT)
def test_a_transient_status_is_retried_on_the_same_provider(gateway, provider, upstream, status):
    upstream.set_behavior("a", fails(status, times=1))
    gw = gateway(config(provider("a"), max_retry_after_wait_s=0))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "a/a"
    assert answer.headers["x-modelbroker-attempts"] == "2"
    assert upstream.calls["a"] == 2


@pytest.mark.parametrize(
    "behavior",
    [{"kind": "drop"}, {"kind": "reset_mid_body"}, {"kind": "ok", "delay_s": 2.0}],
    ids=["dropped", "reset-mid-body", "read-timeout"],
)
def test_a_transport_failure_is_retried_on_the_same_provider(gateway, provider, upstream, behavior):
    upstream.set_behavior("a", {**behavior, "times": 1})
    gw = gateway(config(provider("a", timeout_s=0.3)))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-modelbroker-attempts"] == "2"
    assert upstream.calls["a"] == 2


def test_a_refused_connection_falls_back_at_once(gateway, provider, upstream, closed_port_url):
    """Timeouts and connection failures try another provider first (docs/reliability.md)."""
    gw = gateway(config(provider("gone", endpoint=closed_port_url, priority=1), provider("b", priority=2)))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "b/b"
    kinds = [(line["provider"], line.get("error_kind")) for line in gw.log_lines()]
    assert kinds == [("gone", "connect"), ("b", None)]


def test_a_refused_connection_is_retried_when_no_other_provider_can_take_it(gateway, provider, upstream,
                                                                           closed_port_url):
    gw = gateway(config(provider("gone", endpoint=closed_port_url), retries=2, backoff_initial_s=0.01))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 502, answer.text
    assert [a["error"] for a in answer.json()["error"]["attempts"]] == ["connect"] * 3


@pytest.mark.parametrize("status", NOT_RETRIED)
def test_other_4xx_fall_back_at_once(gateway, provider, upstream, status):
    upstream.set_behavior("a", fails(status))
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), retries=3))
    started = time.monotonic()
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "b/b"
    assert dict(upstream.calls) == {"a": 1, "b": 1}
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("status", NOT_RETRIED)
def test_other_4xx_alone_are_answered_at_once(gateway, provider, upstream, status):
    """Not retried; the request's own fault (400, 422) is told as the upstream told it, the
    operator's (401, 403, 404: the provider's key or model) as the gateway's 502."""
    upstream.set_behavior("a", fails(status))
    gw = gateway(config(provider("a"), retries=3))
    answer = gw.generate({"prompt": "hi"})
    error = answer.json()["error"]
    if status in (400, 422):
        assert answer.status_code == status, answer.text
        assert error["message"] == f"fake upstream error {status}"
        assert error["type"] == "invalid_request_error"
    else:
        assert answer.status_code == 502, answer.text
        assert error["code"] == "all_providers_failed"
    assert answer.headers["x-should-retry"] == "false"
    assert [a["status"] for a in error["attempts"]] == [status]
    assert upstream.calls["a"] == 1


def test_retries_default_to_one(gateway, provider, upstream):
    upstream.set_behavior("a", fails(500))
    gw = gateway({"reliability": {"backoff_initial_s": 0.01}, "providers": [provider("a")]})
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 502
    assert upstream.calls["a"] == 2


def test_retries_from_reliability_and_per_provider(gateway, provider, upstream):
    upstream.set_behavior("*", fails(503))
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2, retries=0), retries=2,
                        failure_threshold=10))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 502
    assert [a["provider"] for a in answer.json()["error"]["attempts"]] == ["a/a"] * 3 + ["b/b"]


def test_at_most_max_attempts_per_request(gateway, provider, upstream):
    upstream.set_behavior("*", fails(500))
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), provider("c", priority=3),
                        retries=4, failure_threshold=100))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 502
    assert [a["provider"] for a in answer.json()["error"]["attempts"]] == ["a/a"] * 5
    assert sum(upstream.calls.values()) == 5


def test_max_attempts_is_configurable(gateway, provider, upstream):
    upstream.set_behavior("*", fails(500))
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), retries=1, max_attempts=3,
                        failure_threshold=100))
    answer = gw.generate({"prompt": "hi"})
    assert [a["provider"] for a in answer.json()["error"]["attempts"]] == ["a/a", "a/a", "b/b"]


def test_no_retry_once_the_provider_cools_down(gateway, provider, upstream):
    upstream.set_behavior("a", fails(500))
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), retries=4, failure_threshold=2))
    answer = gw.generate({"prompt": "hi"})
    assert answer.json()["provider"] == "b/b"
    assert upstream.calls["a"] == 2


def test_backoff_waits_between_attempts(gateway, provider, upstream):
    upstream.set_behavior("a", fails(503, times=3))
    gw = gateway(config(provider("a"), retries=3, backoff_initial_s=0.1, backoff_max_s=0.15,
                        failure_threshold=10))
    started = time.monotonic()
    answer = gw.generate({"prompt": "hi"})
    elapsed = time.monotonic() - started
    assert answer.status_code == 200 and answer.headers["x-modelbroker-attempts"] == "4"
    # pauses of 0.1, 0.15 and 0.15 s, each with up to half taken off by the jitter
    assert 0.2 <= elapsed < 2.0


# --- 429 and Retry-After ------------------------------------------------------------------------


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_seconds({"retry-after": when}) <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert retry_after_seconds({"retry-after": past}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "5"}, 5.0),
        ({"retry-after-ms": "4000"}, 4.0),
        ({"retry-after": "HTTP-DATE"}, 6.0),
        ({"retry-after": "100000"}, 300.0),
    ],
    ids=["seconds", "ms", "http-date", "capped"],
)
def test_a_429_with_retry_after_moves_on_at_once_and_cools_the_provider(gateway, provider, upstream,
                                                                        headers, expected):
    if headers.get("retry-after") == "HTTP-DATE":
        headers = {"retry-after": email.utils.formatdate(time.time() + 6, usegmt=True)}
    upstream.set_behavior("a", fails(429, headers=headers))
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), cooldown_s=0.5,
                        max_cooldown_s=300, retries=2))
    started = time.monotonic()
    answer = gw.generate({"prompt": "hi"})
    assert time.monotonic() - started < 2, "the request waited for a Retry-After another provider did not need"
    assert answer.status_code == 200 and answer.json()["provider"] == "b/b"
    assert upstream.calls["a"] == 1
    row = health_row(gw, "a/a")
    assert row["state"] == "cooling_down"
    assert expected - 2 <= row["cooling_down_for_s"] <= expected
    gw.generate({"prompt": "again"})
    assert upstream.calls["a"] == 1, "a provider cooling down for its Retry-After was called"


def test_a_short_retry_after_is_waited_for_when_no_other_provider_can_take_it(gateway, provider, upstream):
    upstream.set_behavior("a", fails(429, times=1, headers={"retry-after-ms": "400"}))
    gw = gateway(config(provider("a")))
    started = time.monotonic()
    answer = gw.generate({"prompt": "hi"})
    elapsed = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-modelbroker-attempts"] == "2"
    assert 0.4 <= elapsed < 2


def test_a_short_retry_after_is_waited_for_when_the_others_cool_down(gateway, provider, upstream):
    upstream.set_behavior("b", fails(401))
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), cooldown_s=30))
    only_b = {"model": "b/b", "messages": [{"role": "user", "content": "x"}]}
    assert gw.client.post("/v1/chat/completions", json=only_b).status_code == 502
    assert health_row(gw, "b/b")["state"] == "cooling_down"
    upstream.set_behavior("a", fails(429, times=1, headers={"retry-after": "0.3"}))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "a/a"
    assert answer.headers["x-modelbroker-attempts"] == "2"
    assert upstream.calls["b"] == 1


def test_a_long_retry_after_is_not_waited_for(gateway, provider, upstream):
    upstream.set_behavior("a", fails(429, headers={"retry-after": "3"}))
    gw = gateway(config(provider("a"), max_retry_after_wait_s=1, retries=2))
    started = time.monotonic()
    answer = gw.generate({"prompt": "hi"})
    assert time.monotonic() - started < 2
    assert answer.status_code == 429, answer.text
    assert answer.headers["retry-after"] == "3"
    assert answer.headers["x-should-retry"] == "false"
    assert answer.json()["error"]["code"] == "rate_limited"
    assert upstream.calls["a"] == 1


def test_a_retry_after_past_the_deadline_is_not_waited_for(gateway, provider, upstream):
    upstream.set_behavior("a", fails(429, headers={"retry-after": "2"}))
    gw = gateway(config(provider("a"), retries=2))
    started = time.monotonic()
    answer = gw.generate({"prompt": "hi"}, headers={"x-modelbroker-timeout": "1.5"})
    assert time.monotonic() - started < 1.4
    assert answer.status_code == 429, answer.text
    assert answer.headers["x-should-retry"] == "false"


def test_a_429_without_retry_after_and_nowhere_else_to_go_is_retried_with_backoff(gateway, provider, upstream):
    upstream.set_behavior("a", fails(429, times=1))
    gw = gateway(config(provider("a")))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-modelbroker-attempts"] == "2"


def test_a_429_without_retry_after_moves_on_at_once_when_another_provider_can_take_it(gateway, provider, upstream):
    upstream.set_behavior("a", fails(429))
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), retries=3))
    answer = gw.generate({"prompt": "hi"})
    assert answer.json()["provider"] == "b/b"
    assert dict(upstream.calls) == {"a": 1, "b": 1}
    assert health_row(gw, "a/a")["state"] == "healthy"  # one 429 without Retry-After: no cooldown yet


def test_every_provider_rate_limiting_gives_429_with_the_soonest_retry_after(gateway, provider, upstream):
    upstream.set_behavior("a", fails(429, headers={"retry-after": "40"}))
    upstream.set_behavior("b", fails(429, headers={"retry-after": "20"}))
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2)))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 429, answer.text
    assert answer.headers["retry-after"] == "20"
    assert answer.headers["x-should-retry"] == "false"
    error = answer.json()["error"]
    assert error["code"] == "rate_limited" and error["type"] == "rate_limit_error"
    assert [a["status"] for a in error["attempts"]] == [429, 429]


def test_exhausted_quota_is_not_retried_and_falls_back(gateway, provider, upstream):
    upstream.set_behavior("a", fails(429, error_code="insufficient_quota"))
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), retries=3))
    answer = gw.generate({"prompt": "hi"})
    assert answer.json()["provider"] == "b/b"
    assert upstream.calls["a"] == 1
    assert health_row(gw, "a/a")["state"] == "cooling_down"


def test_exhausted_quota_alone_is_no_invitation_to_retry(gateway, provider, upstream):
    upstream.set_behavior("a", fails(429, error_code="insufficient_quota"))
    gw = gateway(config(provider("a"), retries=3))
    answer = gw.generate({"prompt": "hi"})
    assert upstream.calls["a"] == 1
    assert answer.status_code == 502, answer.text
    assert answer.headers["x-should-retry"] == "false"
    assert "retry-after" not in answer.headers
    assert answer.json()["error"]["attempts"][0]["status"] == 429


# --- what the client is told --------------------------------------------------------------------


def test_502_says_the_gateway_already_retried(gateway, provider, upstream):
    upstream.set_behavior("*", fails(500))
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2)))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 502
    assert answer.headers["x-should-retry"] == "false"
    error = answer.json()["error"]
    assert error["code"] == "all_providers_failed"
    assert [(a["provider"], a["status"]) for a in error["attempts"]] == [("a/a", 500), ("a/a", 500), ("b/b", 500), ("b/b", 500)]


def test_502_on_the_openai_route_too(gateway, provider, upstream):
    upstream.set_behavior("*", fails(503))
    gw = gateway(config(provider("a")))
    answer = gw.client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 502
    assert answer.headers["x-should-retry"] == "false"


# --- context length -------------------------------------------------------------------------------


def test_a_context_length_error_falls_back_to_a_larger_context_window(gateway, provider, upstream):
    too_long = fails(400, error_code="context_length_exceeded")
    for model in ("small", "same"):
        upstream.set_behavior(model, too_long)
    gw = gateway(config(
        provider("small", context_window=8000, priority=1),
        provider("same", context_window=8000, priority=2),
        provider("unknown", priority=3),
        provider("big", context_window=128000, priority=4),
        retries=2,
    ))
    answer = gw.generate({"prompt": "a long prompt"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "big/big"
    assert dict(upstream.calls) == {"small": 1, "big": 1}


def test_a_context_length_error_with_no_larger_window_is_the_clients_400(gateway, provider, upstream):
    upstream.set_behavior("small", fails(400, error_code="context_length_exceeded"))
    gw = gateway(config(provider("small", context_window=8000, priority=1),
                        provider("smaller", context_window=4000, priority=2)))
    answer = gw.generate({"prompt": "a long prompt"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "context_length_exceeded"
    assert answer.headers["x-should-retry"] == "false"
    assert dict(upstream.calls) == {"small": 1}


@pytest.mark.parametrize(("status", "body", "expected"), [
    (400, b'{"error": {"message": "This model\'s maximum context length is 8192 tokens"}}', True),
    (422, b'{"detail": "too many tokens in the prompt"}', True),
    (500, b'{"error": {"message": "This model\'s maximum context length is 8192 tokens"}}', False),
    (400, b'{"error": {"message": "bad temperature"}}', False),
])
def test_the_wording_of_openai_compatible_servers_becomes_the_context_code(status, body, expected):
    """The policy reads codes only; status_error, the adapters' helper, turns the wording of servers
    that give no code (vLLM, TGI) into the code."""
    error = status_error(status, {}, body)
    assert error.context_too_long is expected
    assert (error.code == "context_length_exceeded") is expected
    wording_only = ProviderError(ErrorKind.STATUS, "This model's maximum context length is 8192 tokens", status=400)
    assert not wording_only.context_too_long  # no code: the policy does not read words


def test_a_context_length_error_does_not_count_against_the_provider(gateway, provider, upstream):
    upstream.set_behavior("small", fails(400, error_code="context_length_exceeded"))
    gw = gateway(config(provider("small", context_window=8000, priority=1),
                        provider("big", context_window=128000, priority=2), failure_threshold=1))
    for _ in range(3):
        assert gw.generate({"prompt": "hi"}).json()["provider"] == "big/big"
    assert health_row(gw, "small/small")["state"] == "healthy"
    assert upstream.calls["small"] == 3
