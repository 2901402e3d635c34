"""Fault injection under load: one failure mode at a time on the first provider.

For each mode, 200 requests at concurrency 20 go to a gateway whose first provider
(priority 1) fails that way and whose second is healthy. Every request must succeed;
the circuit breaker must keep the calls to the failing provider bounded; app.log must
hold exactly one line per attempt; and once the failure is cleared and the cooldown has
passed, the first provider must answer again.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest

from modelbroker.fake_upstream import FakeUpstream

from ._support import blast, config, health_row, wait_until

REQUESTS = 200
CONCURRENCY = 20
RELIABILITY = {
    "retries": 1,
    "failure_threshold": 3,
    "cooldown_s": 0.25,
    "max_cooldown_s": 1.0,
    "backoff_initial_s": 0.01,
    "backoff_max_s": 0.05,
}
SHORT_TIMEOUT_S = 0.3

#: mode -> (behavior of the failing provider, its extra fields, stream?, expected error_kind, status)
MODES = {
    "500": ({"kind": "status", "status": 500}, {}, False, "status", 500),
    "503": ({"kind": "status", "status": 503}, {}, False, "status", 503),
    "429-retry-after": ({"kind": "status", "status": 429, "headers": {"retry-after": "1"}}, {}, False, "status", 429),
    "read-timeout": ({"kind": "ok", "delay_s": 2.0}, {"timeout_s": SHORT_TIMEOUT_S}, False, "timeout", None),
    "refused": (None, {}, False, "connect", None),
    "reset-mid-body": ({"kind": "reset_mid_body"}, {}, False, "connection", None),
    "malformed-json": ({"kind": "malformed"}, {}, False, "malformed", None),
    "empty-choices": ({"kind": "empty_choices"}, {}, False, "malformed", None),
    "slow-first-byte": ({"kind": "slow_first_byte", "delay_s": 2.0}, {"timeout_s": SHORT_TIMEOUT_S}, True,
                        "timeout", None),
}


def call_bound(elapsed_s: float) -> int:
    """The most calls the failing provider may get in ``elapsed_s`` with the breaker working.

    Before the breaker trips (``failure_threshold`` failures), at most the requests in
    flight plus the threshold's worth of finished ones can have started there, each with
    ``retries + 1`` attempts. After that only half-open trials: one per cooldown at most.
    """
    before_trip = (CONCURRENCY + RELIABILITY["failure_threshold"]) * (RELIABILITY["retries"] + 1)
    trials = math.ceil(elapsed_s / RELIABILITY["cooldown_s"]) + 1
    return before_trip + trials


@pytest.mark.parametrize("mode", list(MODES))
def test_failure_mode_under_load(gateway, provider, upstream, closed_port_url, mode):
    behavior, fields, stream, error_kind, status = MODES[mode]
    if behavior is None:
        failing = provider("a", priority=1, endpoint=closed_port_url, **fields)
    else:
        upstream.set_behavior("a", behavior)
        failing = provider("a", priority=1, **fields)
    gw = gateway(config(failing, provider("b", priority=2), **RELIABILITY))

    started = time.monotonic()
    bodies = [{"prompt": f"request {i}", "stream": stream} for i in range(REQUESTS)]
    answers = blast(gw.url, "/generate", bodies, concurrency=CONCURRENCY)
    elapsed = time.monotonic() - started

    failed = [(a.status_code, a.text[:200]) for a in answers if a.status_code != 200]
    assert not failed, f"{len(failed)} of {REQUESTS} requests failed, e.g. {failed[:3]}"
    if stream:
        assert all(b'"done":true' in a.content for a in answers)
    attempts_at_a = sum(1 for a in answers for _ in range(int(a.headers["x-modelbroker-attempts"]) - 1))
    assert all(a.headers["x-modelbroker-provider"] == "b/b" for a in answers)
    bound = call_bound(elapsed)
    assert 1 <= attempts_at_a <= bound, f"{attempts_at_a} attempts at the failing provider in {elapsed:.2f} s"
    if behavior is not None:
        assert upstream.calls["a"] == attempts_at_a
    assert upstream.calls["b"] == REQUESTS
    assert elapsed < 15

    # The failure clears; once the cooldown has passed the provider is used again.
    recovered = None
    if behavior is None:
        recovered = FakeUpstream(port=urlsplit(closed_port_url).port).start()
    else:
        upstream.set_behavior("a", "ok")
    try:
        assert wait_until(lambda: health_row(gw, "a/a")["state"] != "cooling_down",
                          timeout=RELIABILITY["max_cooldown_s"] + 1)
        again = gw.generate({"prompt": "after", "stream": stream})
        assert again.status_code == 200, again.text
        assert again.headers["x-modelbroker-provider"] == "a/a"
        assert health_row(gw, "a/a")["state"] == "healthy"
        assert health_row(gw, "a/a")["in_flight"] == 0 and health_row(gw, "b/b")["in_flight"] == 0
    finally:
        if recovered is not None:
            recovered.stop()

    # app.log: exactly one line per attempt, each where the responses say.
    everything = [*answers, again]
    lines = gw.log_lines()
    assert len(lines) == sum(int(a.headers["x-modelbroker-attempts"]) for a in everything)
    per_request = Counter(line["request_id"] for line in lines)
    assert all(per_request[a.headers["x-request-id"]] == int(a.headers["x-modelbroker-attempts"]) for a in everything)
    by_provider = Counter(line["provider"] for line in lines)
    assert by_provider == {"a": attempts_at_a + 1, "b": REQUESTS}
    failures_at_a = [line for line in lines if line["provider"] == "a" and not line["success"]]
    assert len(failures_at_a) == attempts_at_a
    assert {(line["error_kind"], line["status"]) for line in failures_at_a} == {(error_kind, status)}
    assert all(line["success"] for line in lines if line["provider"] == "b")
