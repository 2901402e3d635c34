"""Per-provider timeouts and the request deadline across attempts: a slow provider never
holds a client past reliability.request_timeout_s (or x-modelbroker-timeout): 504."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from modelbroker._config.providers import GatewayConfig
from modelbroker._routing import router as router_module
from modelbroker._routing.errors import AllProvidersFailed
from modelbroker._routing.types import ChatRequest

from ._support import blast, config, make_provider, make_router

SLOW = {"kind": "ok", "delay_s": 3.0}


def timed(call):
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def test_request_timeout_gives_504(gateway, provider, upstream):
    upstream.set_behavior("a", SLOW)
    gw = gateway(config(provider("a", timeout_s=30), request_timeout_s=0.5))
    answer, elapsed = timed(lambda: gw.generate({"prompt": "hi"}))
    assert 0.45 <= elapsed < 1.5
    assert answer.status_code == 504, answer.text
    assert answer.headers["x-should-retry"] == "false"
    error = answer.json()["error"]
    assert error["code"] == "deadline_exceeded" and error["type"] == "timeout_error"
    assert error["attempts"][0]["error"] == "timeout"
    line, = gw.log_lines()
    assert line["error_kind"] == "timeout" and line["success"] is False


def test_the_client_may_ask_for_less(gateway, provider, upstream):
    upstream.set_behavior("a", SLOW)
    gw = gateway(config(provider("a", timeout_s=30), request_timeout_s=30))
    answer, elapsed = timed(lambda: gw.generate({"prompt": "hi"}, headers={"x-modelbroker-timeout": "0.3"}))
    assert answer.status_code == 504
    assert 0.25 <= elapsed < 1.3


def test_the_client_cannot_ask_for_more(gateway, provider, upstream):
    upstream.set_behavior("a", SLOW)
    gw = gateway(config(provider("a", timeout_s=30), request_timeout_s=0.4))
    answer, elapsed = timed(lambda: gw.generate({"prompt": "hi"}, headers={"x-modelbroker-timeout": "60"}))
    assert answer.status_code == 504
    assert elapsed < 1.4


@pytest.mark.parametrize("value", ["soon", ""])
def test_a_header_that_is_no_number_is_ignored(gateway, provider, upstream, value):
    gw = gateway(config(provider("a")))
    answer = gw.generate({"prompt": "hi"}, headers={"x-modelbroker-timeout": value})
    assert answer.status_code == 200


def test_the_deadline_spans_retries_and_fallbacks(gateway, provider, upstream):
    upstream.set_behavior("*", SLOW)
    gw = gateway(config(provider("a", priority=1, timeout_s=0.25), provider("b", priority=2, timeout_s=0.25),
                        provider("c", priority=3, timeout_s=0.25), retries=2, request_timeout_s=0.6))
    answer, elapsed = timed(lambda: gw.generate({"prompt": "hi"}))
    assert answer.status_code == 504, answer.text
    assert elapsed < 2.0
    attempts = answer.json()["error"]["attempts"]
    assert 1 <= len(attempts) <= 3, attempts  # 0.25 s each, pauses between: never a fourth
    assert all(a["error"] == "timeout" for a in attempts), attempts
    lines = gw.log_lines()
    assert len(lines) == len(attempts), (lines, attempts)


def test_a_provider_timeout_falls_back_within_the_deadline(gateway, provider, upstream):
    upstream.set_behavior("slow", SLOW)
    gw = gateway(config(provider("slow", priority=1, timeout_s=0.3), provider("fast", priority=2), retries=0))
    answer, elapsed = timed(lambda: gw.generate({"prompt": "hi"}))
    assert answer.status_code == 200 and answer.json()["provider"] == "fast/fast"
    assert 0.25 <= elapsed < 1.5


def test_a_stream_that_does_not_start_in_time_gives_504(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "slow_first_byte", "delay_s": 3.0})
    gw = gateway(config(provider("a", timeout_s=30), request_timeout_s=0.4))
    answer, elapsed = timed(lambda: gw.generate({"prompt": "hi", "stream": True}))
    assert answer.status_code == 504
    assert elapsed < 1.4


def test_a_stream_with_slow_first_byte_falls_back(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "slow_first_byte", "delay_s": 3.0})
    gw = gateway(config(provider("a", priority=1, timeout_s=0.3), provider("b", priority=2), retries=0))
    chat = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    with gw.client.stream("POST", "/v1/chat/completions", json=chat) as answer:
        body = answer.read()
    assert answer.status_code == 200
    assert answer.headers["x-modelbroker-provider"] == "b/b"
    assert body.endswith(b"data: [DONE]\n\n")


def test_no_backoff_pause_past_the_deadline(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "status", "status": 503})
    gw = gateway(config(provider("a"), retries=3, backoff_initial_s=2, backoff_max_s=2, request_timeout_s=0.5))
    answer, elapsed = timed(lambda: gw.generate({"prompt": "hi"}))
    assert elapsed < 0.9, "the gateway slept for a backoff that could not end before the deadline"
    assert answer.status_code == 502
    assert upstream.calls["a"] == 1


def test_the_deadline_holds_under_concurrency(gateway, provider, upstream):
    upstream.set_behavior("a", SLOW)
    gw = gateway(config(provider("a", timeout_s=30), request_timeout_s=0.5))
    started = time.monotonic()
    answers = blast(gw.url, "/generate", [{"prompt": str(i)} for i in range(20)], concurrency=20)
    assert time.monotonic() - started < 2.5
    assert [a.status_code for a in answers] == [504] * 20, [a.text for a in answers if a.status_code != 504]


class _AsGiven:
    def select_provider(self, providers):
        return providers


class _Hangs:
    def call_provider(self, provider):
        return asyncio.sleep(10)


async def test_an_attempt_cut_off_by_the_deadline_always_means_504(monkeypatch):
    """The event loop's timer may fire a little before time.monotonic() reaches the
    deadline (uvloop keeps time in milliseconds): the request is still past its deadline,
    not a 502, and no new attempt starts in the sliver that seems left."""
    real = time.monotonic
    calls = []

    def clock() -> float:  # behind the event loop's clock once the attempt is under way
        calls.append(1)
        return real() if len(calls) == 1 else real() - 0.05

    monkeypatch.setattr(router_module, "time", SimpleNamespace(monotonic=clock, perf_counter=time.perf_counter))
    gateway_config = GatewayConfig(reliability={"backoff_initial_s": 0.0})
    router = make_router(gateway_config, strategy=_AsGiven(), adapter=_Hangs())
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], deadline=real() + 0.2)
    with pytest.raises(AllProvidersFailed) as failed:
        await router.route(request, [make_provider("a", priority=1), make_provider("b", priority=2)])
    assert failed.value.deadline
    # "a" may use half the time left (it falls back); "b", the last, is cut off by the deadline.
    assert [a.kind for a in failed.value.attempts] == ["timeout", "timeout"]
    assert [a.provider for a in failed.value.attempts] == ["a/a", "b/b"]
    assert "half of the time left" in failed.value.attempts[0].message
    assert "deadline" in failed.value.attempts[1].message
