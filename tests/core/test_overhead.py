"""``x-modelbroker-overhead-ms``: the gateway's own time, with the failed attempts, the backoff
pauses and the upstream's answer taken out, on real gateways in front of the fake upstream.

A retried request is where it went wrong: the backoff pause was taken out as asked, and
uvloop's millisecond timers may end it up to a millisecond early, which left 0.000 for a
gateway whose own time is well under a millisecond.
"""

from __future__ import annotations

import time

import pytest

RETRIED = 3  # fail-500, its retry after a backoff, then the fallback that answers


@pytest.fixture
def config(provider):
    """``broken`` always fails and is retried once, after a short backoff; ``fast`` answers. It never
    cools down, so that every request is retried."""
    return {
        "providers": [provider("broken", model="fail-500", priority=1), provider("fast", priority=2)],
        "reliability": {"retries": 1, "backoff_initial_s": 0.02, "failure_threshold": 1000},
    }


def timed(gw, body: dict) -> tuple[float, float]:
    """The request's overhead header and its whole time as the client saw it, both in ms."""
    started = time.perf_counter()
    answer = gw.generate(body)
    total_ms = (time.perf_counter() - started) * 1000
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-modelbroker-attempts"] == str(RETRIED)
    return float(answer.headers["x-modelbroker-overhead-ms"]), total_ms


def assert_plausible(overhead_ms: float, total_ms: float) -> None:
    assert 0 < overhead_ms < total_ms, f"overhead {overhead_ms} ms of a {total_ms:.3f} ms request"
    assert overhead_ms < total_ms - 10, "the backoff pause (at least 10 ms) counted as the gateway's time"


def test_the_first_request_of_a_fresh_gateway_retried_has_its_own_time(gateway, config):
    for _ in range(5):
        gw = gateway(config, log=False)
        assert_plausible(*timed(gw, {"prompt": "hello"}))


def test_every_retried_request_has_its_own_time(gateway, config):
    gw = gateway(config, log=False)
    for n in range(20):
        assert_plausible(*timed(gw, {"prompt": f"hello {n}"}))


def test_a_retried_stream_has_its_own_time_until_its_first_content(gateway, config):
    gw = gateway(config, log=False)
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(5):
        started = time.perf_counter()
        with gw.client.stream("POST", "/v1/chat/completions", json=body) as answer:
            total_ms = (time.perf_counter() - started) * 1000  # the head: sent with the first content
            assert answer.status_code == 200
            assert answer.headers["x-modelbroker-attempts"] == str(RETRIED)
            assert_plausible(float(answer.headers["x-modelbroker-overhead-ms"]), total_ms)
            answer.read()
