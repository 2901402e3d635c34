"""No prompt sent twice (docs/reliability.md): through a running gateway, an upstream that reads a
request on a kept-alive connection and closes it without answering (the fake upstream's ``drop``)
gets exactly one call per attempt the gateway records, whichever transport carries the calls.

The first request of each test leaves the gateway a kept-alive connection to the fake upstream;
the second is dropped on it. Counting calls against app.log's lines (one per attempt) and the
attempts the client is told catches a call made below the router, where no attempt is counted.
"""

from __future__ import annotations

import pytest

from ._support import config

TRANSPORTS = ["http1", "aiohttp"]
DROP_ONCE = {"kind": "drop", "times": 1}


def warm(gw) -> None:
    """One answered request: the gateway keeps its connection to the upstream open."""
    answer = gw.generate({"prompt": "warm up"})
    assert answer.status_code == 200, answer.text


def assert_dropped_attempt(line: dict, transport: str) -> None:
    assert (line["success"], line["error_kind"]) == (False, "connection"), line
    if transport == "http1":
        assert "not sent again, since it may have been read" in line["error"], line


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("route", ["generate", "chat-stream"])
def test_a_drop_on_a_kept_connection_is_one_call_one_attempt_then_the_router_retries(
        gateway, provider, upstream, transport, route):
    gw = gateway(config(provider("a", retries=1)), upstream_transport=transport)
    warm(gw)
    upstream.set_behavior("a", DROP_ONCE)
    if route == "generate":
        answer = gw.generate({"prompt": "hi"})
    else:
        answer = gw.chat("hi", stream=True)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-modelbroker-attempts"] == "2"  # the drop, then the router's retry

    lines = gw.log_lines()
    assert upstream.calls["a"] == len(lines) == 3  # warm-up, drop, retry: one call each
    assert [line["success"] for line in lines] == [True, False, True]
    assert_dropped_attempt(lines[1], transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_drop_on_a_kept_connection_with_no_retry_left_is_one_call(gateway, provider, upstream, transport):
    gw = gateway(config(provider("a", retries=0)), upstream_transport=transport)
    warm(gw)
    upstream.set_behavior("a", DROP_ONCE)
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 502, answer.text
    [attempt] = answer.json()["error"]["attempts"]
    assert (attempt["provider"], attempt["ok"], attempt["error"]) == ("a/a", False, "connection")

    lines = gw.log_lines()
    assert upstream.calls["a"] == len(lines) == 2  # warm-up, drop
    assert_dropped_attempt(lines[1], transport)
