"""Timeouts fall back first: a hung provider costs one attempt's limit, then the next answers.

A streamed request must bring its first content within ``first_token_timeout_s`` (it can
still fall back then); after content, a pause longer than ``stream_idle_timeout_s`` or the
request's deadline ends the stream with an error event, recorded as ``partial``.
docs/reliability.md, 'Timeouts fall back first', states the rules.
"""

from __future__ import annotations

import time

import orjson
import pytest

from ._support import config

HANG = {"kind": "ok", "delay_s": 30.0}
HELLO = [{"role": "user", "content": "hello"}]


def timed(call):
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def stream_events(gw, **headers: str) -> tuple[list[dict], float]:
    """A streamed chat request read to its end: its data events (JSON) and how long it took."""
    started = time.monotonic()
    events = []
    with gw.client.stream("POST", "/v1/chat/completions", headers=headers,
                          json={"model": "auto", "messages": HELLO, "stream": True}) as answer:
        assert answer.status_code == 200, answer.read()
        for line in answer.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(orjson.loads(line[6:]))
    return events, time.monotonic() - started


def text_of(events: list[dict]) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))


# --- whole answers ----------------------------------------------------------------------------


def test_a_hung_provider_costs_its_timeout_then_the_next_answers(gateway, provider, upstream):
    """The issue's case, scaled down: never a second wait on the hung provider while another is left."""
    upstream.set_behavior("hung", HANG)
    gw = gateway(config(provider("hung", priority=1, timeout_s=0.5), provider("ok", priority=2), retries=2))
    answer, elapsed = timed(lambda: gw.generate({"prompt": "hi"}))
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "ok/ok"
    assert 0.45 <= elapsed < 1.5
    assert upstream.calls["hung"] == 1
    kinds = [(line["provider"], line.get("error_kind")) for line in gw.log_lines()]
    assert kinds == [("hung", "timeout"), ("ok", None)]


def test_an_attempt_leaves_the_other_providers_half_the_time(gateway, provider, upstream):
    """A provider whose own timeout is longer than the deadline allows is cut at half the time
    left, so the next provider still has time before the deadline."""
    upstream.set_behavior("hung", HANG)
    gw = gateway(config(provider("hung", priority=1, timeout_s=30), provider("ok", priority=2),
                        request_timeout_s=1.0))
    answer, elapsed = timed(lambda: gw.generate({"prompt": "hi"}))
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "ok/ok"
    assert 0.45 <= elapsed < 0.95
    [failed, _] = gw.log_lines()
    assert failed["error_kind"] == "timeout"
    assert "half of the time left" in failed["error"]


def test_the_last_provider_may_use_all_the_time_left(gateway, provider, upstream):
    """No other provider is left: the attempt is not cut at half, only at the deadline."""
    upstream.set_behavior("slow", {"kind": "ok", "delay_s": 0.7})
    gw = gateway(config(provider("slow", timeout_s=30, retries=0), request_timeout_s=1.2))
    answer, elapsed = timed(lambda: gw.generate({"prompt": "hi"}))
    assert answer.status_code == 200, answer.text
    assert 0.65 <= elapsed < 1.2


def test_a_timeout_is_retried_on_the_same_provider_only_when_no_other_can_take_it(gateway, provider, upstream):
    upstream.set_behavior("a", {**HANG, "times": 1})
    gw = gateway(config(provider("a", timeout_s=0.3), retries=1))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 200, answer.text
    assert upstream.calls["a"] == 2
    assert [line.get("error_kind") for line in gw.log_lines()] == ["timeout", None]


def test_a_timeout_with_the_others_cooling_down_is_retried(gateway, provider, upstream):
    """The other provider is there but cannot take the request now: the same one is tried again."""
    upstream.set_behavior("b", {"kind": "status", "status": 401})  # cools down at once
    gw = gateway(config(provider("b", priority=1), provider("a", priority=2, timeout_s=0.3), retries=1,
                        cooldown_s=30, max_cooldown_s=30))
    assert gw.generate({"prompt": "b fails and cools down"}).json()["provider"] == "a/a"
    upstream.set_behavior("a", {**HANG, "times": 1})
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "a/a"
    assert answer.headers["x-modelbroker-attempts"] == "2"


# --- streams: before the first content ----------------------------------------------------------


def test_a_stream_without_content_in_time_falls_back(gateway, provider, upstream):
    """Headers and the role chunk, then nothing: the read timeout alone (30 s) would wait; the
    first-token limit moves on, and the client sees one clean stream from the next provider."""
    upstream.set_behavior("mute", {"kind": "stream_stall", "cut_after": 0})
    gw = gateway(config(provider("mute", priority=1, timeout_s=30, first_token_timeout_s=0.4),
                        provider("ok", priority=2)))
    events, elapsed = stream_events(gw)
    assert 0.35 <= elapsed < 1.5
    assert text_of(events).startswith("Fake reply from ok")
    assert {e["model"] for e in events} == {"ok"}
    [failed, succeeded] = gw.log_lines()
    assert (failed["provider"], failed["error_kind"]) == ("mute", "timeout")
    assert "first_token_timeout_s (0.4 s)" in failed["error"]
    assert succeeded["success"] is True


def test_first_token_timeout_defaults_to_timeout_s(gateway, provider, upstream):
    upstream.set_behavior("mute", {"kind": "stream_stall", "cut_after": 0})
    gw = gateway(config(provider("mute", priority=1, timeout_s=0.4), provider("ok", priority=2)))
    events, elapsed = stream_events(gw)
    assert elapsed < 1.5
    assert text_of(events).startswith("Fake reply from ok")


# --- streams: after content -------------------------------------------------------------------


def assert_ended_by(events: list[dict], gw, reason: str) -> None:
    """The stream ended with the gateway's error event, after some content, recorded as partial."""
    assert text_of(events), events
    assert "error" in events[-1], events[-1]
    assert events[-1]["error"]["code"] == "stream_interrupted"
    [line] = gw.log_lines()
    assert line["success"] is False and line["error_kind"] == "partial"
    assert reason in line["error"], line["error"]


def test_a_stall_after_content_ends_the_stream_at_the_idle_limit(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "stream_stall", "chunks": 4, "cut_after": 2})
    gw = gateway(config(provider("a", timeout_s=30, stream_idle_timeout_s=0.4), provider("b", priority=5)))
    events, elapsed = stream_events(gw)
    assert 0.35 <= elapsed < 1.5
    assert_ended_by(events, gw, "stream_idle_timeout_s (0.4 s)")
    assert upstream.calls["b"] == 0  # content had gone to the client: no fallback


def test_pauses_shorter_than_the_idle_limit_are_fine(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "ok", "chunks": 5, "chunk_delay_s": 0.2})
    gw = gateway(config(provider("a", stream_idle_timeout_s=0.5)))
    events, elapsed = stream_events(gw)
    assert elapsed >= 0.75
    assert text_of(events).startswith("Fake reply from a")
    assert "error" not in events[-1]
    [line] = gw.log_lines()
    assert line["success"] is True


@pytest.mark.parametrize("how", ["config", "header"])
def test_the_request_deadline_ends_a_long_stream(gateway, provider, upstream, how):
    """Each pause is short, but the whole stream runs past the deadline."""
    upstream.set_behavior("a", {"kind": "ok", "chunks": 12, "chunk_delay_s": 0.15})
    deadline = {"request_timeout_s": 0.8} if how == "config" else {}
    headers = {"x-modelbroker-timeout": "0.8"} if how == "header" else {}
    gw = gateway(config(provider("a", stream_idle_timeout_s=5), **deadline))
    events, elapsed = stream_events(gw, **headers)
    assert 0.75 <= elapsed < 1.4
    assert_ended_by(events, gw, "the request deadline passed during the stream")
