"""The circuit breaker (core/_routing/health.py): when a provider cools down, for how long, the
half-open trial, and what /health and the log say about it.

The HealthTracker tests use a settable clock; the gateway tests run the real gateway
in front of the session's FakeUpstream.
"""

from __future__ import annotations

import logging
import time

import pytest

from modelbroker._routing.health import COOLING, HALF_OPEN, HEALTHY, HealthTracker
from modelbroker._routing.types import ErrorKind, ProviderError, RateLimit

from ._support import (
    Clock,
    blast,
    config,
    failure,
    health_row,
    make_provider,
    policy,
    status_failure,
    usage,
    wait_until,
)

# --- HealthTracker, with a clock ------------------------------------------------------------


@pytest.fixture
def clock():
    return Clock()


def tracker(clock, **fields) -> HealthTracker:
    return HealthTracker(policy(**fields), clock=clock)


def fail(health: HealthTracker, provider, error=None, times: int = 1) -> None:
    """``times`` attempts that began and failed."""
    for _ in range(times):
        health.begin(provider)
        health.failed(provider, error or status_failure(500), 10.0)


def succeed(health: HealthTracker, provider, latency_ms: float = 10.0, rate_limit=None, tokens: int = 10) -> None:
    health.begin(provider)
    health.succeeded(provider, latency_ms, usage(tokens), rate_limit)


def cooling_for(health: HealthTracker, provider, clock) -> float:
    return health.of(provider).cooling_until - clock()


def test_defaults_are_the_documented_ones():
    defaults = policy()
    assert (defaults.retries, defaults.max_attempts) == (1, 5)
    assert (defaults.backoff_initial_s, defaults.backoff_max_s) == (0.5, 8.0)
    assert (defaults.failure_threshold, defaults.cooldown_s, defaults.max_cooldown_s) == (3, 30.0, 300.0)
    assert defaults.max_retry_after_wait_s == 10.0
    assert defaults.request_timeout_s == 120.0


def test_cools_down_after_the_threshold_of_consecutive_failures(clock):
    health, p = tracker(clock), make_provider("p")
    fail(health, p, times=2)
    assert health.state(p) == HEALTHY and health.available(p)
    fail(health, p)
    assert health.state(p) == COOLING
    assert not health.available(p)
    assert cooling_for(health, p, clock) == pytest.approx(30.0)


@pytest.mark.parametrize("kind", [ErrorKind.TIMEOUT, ErrorKind.CONNECT, ErrorKind.CONNECTION, ErrorKind.MALFORMED])
def test_transport_and_malformed_failures_count(clock, kind):
    health, p = tracker(clock, failure_threshold=2), make_provider("p")
    fail(health, p, failure(kind), times=2)
    assert health.state(p) == COOLING


def test_a_success_resets_the_count(clock):
    health, p = tracker(clock), make_provider("p")
    fail(health, p, times=2)
    succeed(health, p)
    fail(health, p, times=2)
    assert health.state(p) == HEALTHY
    assert health.of(p).consecutive_failures == 2


@pytest.mark.parametrize("status", [401, 403, 404])
def test_cools_down_at_once_on_401_403_404(clock, status):
    health, p = tracker(clock), make_provider("p")
    fail(health, p, status_failure(status))
    assert health.state(p) == COOLING
    assert cooling_for(health, p, clock) == pytest.approx(30.0)


def test_cools_down_at_once_on_exhausted_quota(clock):
    health, p = tracker(clock), make_provider("p")
    fail(health, p, status_failure(429, code="insufficient_quota"))
    assert health.state(p) == COOLING


def test_a_429_with_retry_after_cools_down_at_once_for_the_longer_of_both(clock):
    health, a, b = tracker(clock), make_provider("a"), make_provider("b")
    fail(health, a, status_failure(429, retry_after=120.0))
    assert health.state(a) == COOLING
    assert cooling_for(health, a, clock) == pytest.approx(120.0)
    fail(health, b, status_failure(429, retry_after=2.0))
    assert cooling_for(health, b, clock) == pytest.approx(30.0)  # never shorter than cooldown_s


def test_retry_after_is_capped_at_max_cooldown(clock):
    health, p = tracker(clock), make_provider("p")
    fail(health, p, status_failure(429, retry_after=86400.0))
    assert cooling_for(health, p, clock) == pytest.approx(300.0)


def test_a_429_without_retry_after_counts_toward_the_threshold_only(clock):
    health, p = tracker(clock), make_provider("p")
    fail(health, p, status_failure(429), times=2)
    assert health.state(p) == HEALTHY
    fail(health, p, status_failure(429))
    assert health.state(p) == COOLING


@pytest.mark.parametrize("status", [400, 413, 422])
def test_the_requests_own_faults_do_not_count(clock, status):
    health, p = tracker(clock), make_provider("p")
    fail(health, p, status_failure(status), times=10)
    assert health.state(p) == HEALTHY
    assert health.of(p).consecutive_failures == 0
    assert health.of(p).in_flight == 0


@pytest.mark.parametrize("status", [None, 500])
def test_a_prompt_too_long_for_the_model_does_not_count_whatever_the_status(clock, status):
    """A context-length error known by its code is the request's fault under any status."""
    health, p = tracker(clock), make_provider("p")
    error = ProviderError(ErrorKind.STATUS, "too long", status=status, code="context_length_exceeded")
    assert error.context_too_long
    fail(health, p, error, times=10)
    assert health.state(p) == HEALTHY
    assert health.of(p).consecutive_failures == 0


def test_cancelled_attempts_do_not_count(clock):
    health, p = tracker(clock), make_provider("p")
    fail(health, p, failure(ErrorKind.CANCELLED), times=10)
    assert health.state(p) == HEALTHY
    assert health.error_rate(p) is None


def test_half_open_after_the_cooldown_with_a_single_trial(clock):
    health, p = tracker(clock), make_provider("p")
    fail(health, p, times=3)
    clock.advance(29.9)
    assert not health.available(p)
    clock.advance(0.2)
    assert health.state(p) == HALF_OPEN
    assert health.available(p)
    health.begin(p)  # the trial
    assert not health.available(p), "a second request went through while the trial is in flight"
    health.succeeded(p, 10.0, usage(5), None)
    assert health.state(p) == HEALTHY and health.available(p)
    assert health.of(p).cooldowns == 0


def test_a_failed_trial_doubles_the_cooldown_up_to_the_cap(clock):
    health, p = tracker(clock), make_provider("p")
    fail(health, p, times=3)
    seen = [cooling_for(health, p, clock)]
    for _ in range(6):
        clock.advance(seen[-1] + 0.01)
        assert health.available(p)  # half-open
        fail(health, p)
        assert health.state(p) == COOLING
        seen.append(cooling_for(health, p, clock))
    assert seen == pytest.approx([30.0, 60.0, 120.0, 240.0, 300.0, 300.0, 300.0])


@pytest.mark.parametrize("straggler", ["succeeds", "fails", "is cancelled"])
def test_while_half_open_only_the_trial_decides(clock, straggler):
    """An attempt that began before the cooldown and ends while the trial runs is counted, but
    neither closes the breaker, nor opens it again, nor frees the trial's place."""
    health, p = tracker(clock), make_provider("p")
    health.begin(p, "straggler")  # a slow request, started while the provider was healthy
    health.begin(p, "broken")
    health.failed(p, status_failure(401), 10.0, "broken")  # cools down at once
    clock.now += 31
    assert health.available(p) and health.state(p) == HALF_OPEN
    health.begin(p, "trial")
    if straggler == "succeeds":
        health.succeeded(p, 10.0, usage(10), None, "straggler")
    elif straggler == "fails":
        health.failed(p, status_failure(500), 10.0, "straggler")
    else:
        health.failed(p, failure(ErrorKind.CANCELLED), 10.0, "straggler")
    assert health.state(p) == HALF_OPEN and not health.available(p)  # the trial still runs, alone
    health.failed(p, status_failure(500), 10.0, "trial")
    assert health.state(p) == COOLING


def test_a_cancelled_trial_frees_the_trial_slot(clock):
    health, p = tracker(clock), make_provider("p")
    fail(health, p, times=3)
    clock.advance(31)
    assert health.available(p)
    fail(health, p, failure(ErrorKind.CANCELLED))
    assert health.state(p) == HALF_OPEN and health.available(p)


def test_a_failure_while_cooling_down_extends_never_shortens(clock):
    health, p = tracker(clock), make_provider("p")
    fail(health, p, status_failure(429, retry_after=200.0))
    until = health.of(p).cooling_until
    fail(health, p)  # an attempt that was in flight fails: 30 s from now is sooner
    assert health.of(p).cooling_until == until
    clock.advance(190)
    fail(health, p)  # now 30 s from now is later than the 10 s left: extended
    assert health.of(p).cooling_until > until
    assert health.of(p).cooling_until >= clock() + 30.0


def test_failures_in_flight_when_the_cooldown_starts_do_not_escalate_it(clock):
    """Twenty requests in flight when a provider breaks: the 3rd failure starts a 30 s
    cooldown; the other 17 arrive while it cools down and are not 17 "repeats"."""
    health, p = tracker(clock), make_provider("p")
    for _ in range(20):
        health.begin(p)
    for _ in range(20):
        health.failed(p, status_failure(500), 10.0)
    assert health.state(p) == COOLING
    assert cooling_for(health, p, clock) == pytest.approx(30.0)
    clock.advance(30.01)
    assert health.available(p)  # half-open
    fail(health, p)  # the trial fails: the first repeat
    assert cooling_for(health, p, clock) == pytest.approx(60.0)


def test_cooling_ends_and_the_report(clock):
    health, p = tracker(clock), make_provider("p", api_key="sk-secret-0123456789abcdef")
    succeed(health, p, latency_ms=40.0)
    fail(health, p, status_failure(403, message="bad key sk-secret-0123456789abcdef was"))
    row = health.report(p)
    assert row["state"] == COOLING
    assert row["cooling_down_for_s"] == pytest.approx(30.0, abs=0.1)
    assert row["cooling_down_until"].endswith("+00:00")
    assert row["recent_error_rate"] == 0.5
    assert row["recent_requests"] == 2
    assert row["p95_ms"] == 40.0
    assert health.cooling_ends(p) == pytest.approx(clock() + 30.0)
    clock.advance(31)
    row = health.report(p)
    assert row["state"] == HALF_OPEN
    assert "cooling_down_until" not in row


def test_error_rate_and_p95_use_a_moving_window(clock):
    health, p = tracker(clock, window=10), make_provider("p")
    fail(health, p, status_failure(400))  # not counted at all
    for i in range(10):
        succeed(health, p, latency_ms=float(i + 1) * 10)
    assert health.error_rate(p) == 0.0
    assert health.p95_ms(p) == 100.0
    fail(health, p, times=2)
    assert health.samples(p) == 10
    assert health.error_rate(p) == pytest.approx(0.2)


# --- pacing and limits in the tracker ----------------------------------------------------------


def test_spent_request_quota_is_passed_over_until_reset(clock):
    health, p = tracker(clock), make_provider("p")
    succeed(health, p, rate_limit=RateLimit(remaining_requests=0, reset_requests_s=2.5))
    assert health.state(p) == HEALTHY
    assert not health.available(p)
    assert health.report(p)["paced_for_s"] == 2.5
    clock.advance(2.6)
    assert health.available(p)


def test_spent_token_quota_is_passed_over_until_reset_capped(clock):
    health, p = tracker(clock, max_cooldown_s=100.0), make_provider("p")
    fail(health, p, status_failure(429, rate_limit=RateLimit(remaining_tokens=0, reset_tokens_s=360.0)))
    assert not health.available(p)
    clock.advance(100.1)
    assert health.available(p)


def test_pacing_without_a_reset_header_waits_one_second(clock):
    health, p = tracker(clock), make_provider("p")
    succeed(health, p, rate_limit=RateLimit(remaining_requests=0))
    assert not health.available(p)
    clock.advance(1.01)
    assert health.available(p)


def test_quota_left_is_no_pacing(clock):
    health, p = tracker(clock), make_provider("p")
    succeed(health, p, rate_limit=RateLimit(remaining_requests=3, remaining_tokens=100, reset_requests_s=9.0))
    assert health.available(p)


def test_max_concurrency(clock):
    health, p = tracker(clock), make_provider("p", max_concurrency=2)
    health.begin(p)
    health.begin(p)
    assert not health.within_limits(p) and not health.available(p)
    health.failed(p, failure(ErrorKind.CANCELLED), 1.0)
    assert health.available(p)


def test_rpm_over_a_sliding_minute(clock):
    health, p = tracker(clock), make_provider("p", rpm=3)
    for _ in range(3):
        succeed(health, p)
        clock.advance(10)
    assert not health.available(p)
    clock.advance(31)  # the first request is now more than 60 s old
    assert health.available(p)


def test_tpm_counts_reported_tokens_and_the_estimate(clock):
    health, p = tracker(clock), make_provider("p", tpm=100)
    assert health.available(p, estimated_tokens=500), "an empty minute lets any one request through"
    succeed(health, p, tokens=90)
    assert health.available(p, estimated_tokens=10)
    assert not health.available(p, estimated_tokens=11)
    clock.advance(61)
    assert health.available(p, estimated_tokens=11)


# --- state changes are logged ---------------------------------------------------------------------


def test_state_changes_are_logged(clock, caplog):
    caplog.set_level(logging.INFO, logger="modelbroker")
    health, p = tracker(clock), make_provider("logged")
    fail(health, p, times=3)
    clock.advance(31)
    health.available(p)
    succeed(health, p)
    messages = [r.getMessage() for r in caplog.records if r.name == "modelbroker"]
    assert any("logged/logged: cooling down for 30.0 s" in m for m in messages), messages
    assert any("logged/logged: cooldown over, half-open" in m for m in messages), messages
    assert any("logged/logged: healthy again" in m for m in messages), messages


# --- through the gateway ------------------------------------------------------------------------


def test_health_shows_cooling_down_then_half_open_then_healthy(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "status", "status": 500, "times": 3})
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), retries=0, cooldown_s=1.0))
    for _ in range(3):
        assert gw.generate({"prompt": "hi"}).json()["provider"] == "b/b"
    row = health_row(gw, "a/a")
    assert row["state"] == "cooling_down"
    assert 0 < row["cooling_down_for_s"] <= 1.0
    assert "cooling_down_until" in row
    assert row["recent_error_rate"] == 1.0
    assert "500" in row["last_error"]
    # while cooling down, a is not called at all
    assert gw.generate({"prompt": "hi"}).json()["provider"] == "b/b"
    assert upstream.calls["a"] == 3
    assert wait_until(lambda: health_row(gw, "a/a")["state"] == "half_open", timeout=3)
    assert gw.generate({"prompt": "hi"}).json()["provider"] == "a/a"  # the trial
    row = health_row(gw, "a/a")
    assert row["state"] == "healthy"
    assert row["recent_error_rate"] == 0.75
    assert "last_error" not in row


def test_health_never_shows_a_secret(gateway, provider, upstream, monkeypatch):
    key = "sk-reliability-health-0123456789"
    monkeypatch.setenv("MB_RELIABILITY_KEY", key)
    upstream.set_behavior("a", {"kind": "status", "status": 401})
    gw = gateway(config(provider("a", api_key="${MB_RELIABILITY_KEY}"), provider("b", priority=2)))
    assert gw.generate({"prompt": "hi"}).status_code == 200
    answer = gw.get("/health")
    assert health_row(gw, "a/a")["state"] == "cooling_down"
    assert key not in answer.text and key[:12] not in answer.text


def test_401_cools_down_at_once_through_the_gateway(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "status", "status": 401})
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), retries=3, cooldown_s=5))
    for _ in range(5):
        assert gw.generate({"prompt": "hi"}).json()["provider"] == "b/b"
    assert upstream.calls["a"] == 1, "a 401 is neither retried nor tried again while cooling down"


def test_when_every_provider_cools_down_the_soonest_back_is_tried(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "status", "status": 429, "headers": {"retry-after": "20"}, "times": 1})
    upstream.set_behavior("b", {"kind": "status", "status": 429, "headers": {"retry-after": "10"}, "times": 1})
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2),
                        max_retry_after_wait_s=0, max_cooldown_s=300))
    first = gw.generate({"prompt": "hi"})
    assert first.status_code == 429, first.text
    assert health_row(gw, "a/a")["state"] == health_row(gw, "b/b")["state"] == "cooling_down"
    started = time.monotonic()
    second = gw.generate({"prompt": "hi"})
    assert time.monotonic() - started < 2, "it must not wait for a cooldown to end"
    assert second.status_code == 200, second.text
    assert second.json()["provider"] == "b/b"
    assert dict(upstream.calls) == {"a": 1, "b": 2}
    assert health_row(gw, "b/b")["state"] == "healthy"


def test_state_changes_are_logged_by_the_gateway(gateway, provider, upstream, caplog):
    caplog.set_level(logging.INFO, logger="modelbroker")
    upstream.set_behavior("a", {"kind": "status", "status": 503, "times": 3})
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), retries=0, cooldown_s=0.2))
    for _ in range(3):
        gw.generate({"prompt": "hi"})
    time.sleep(0.25)
    assert gw.generate({"prompt": "hi"}).json()["provider"] == "a/a"
    messages = [r.getMessage() for r in caplog.records if r.name == "modelbroker"]
    assert any(m.startswith("provider a/a: cooling down") for m in messages), messages
    assert any(m.startswith("provider a/a: cooldown over, half-open") for m in messages), messages
    assert any(m.startswith("provider a/a: healthy again") for m in messages), messages


def test_half_open_lets_a_single_trial_through_under_load(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "status", "status": 500})
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), retries=0, cooldown_s=0.6))
    for _ in range(3):
        gw.generate({"prompt": "hi"})
    assert health_row(gw, "a/a")["state"] == "cooling_down"
    upstream.set_behavior("a", {"kind": "ok", "delay_s": 1.0})  # a slow trial: the others arrive meanwhile
    assert wait_until(lambda: health_row(gw, "a/a")["state"] == "half_open", timeout=3)
    calls_before = upstream.calls["a"]
    answers = blast(gw.url, "/generate", [{"prompt": str(i)} for i in range(12)], concurrency=12)
    assert all(a.status_code == 200 for a in answers)
    assert upstream.calls["a"] - calls_before == 1
    assert sorted(a.json()["provider"] for a in answers) == ["a/a"] + ["b/b"] * 11
    assert health_row(gw, "a/a")["state"] == "healthy"
