"""A client that leaves cancels its upstream call (recorded as ``cancelled``); a shutdown
lets requests in flight finish and flushes app.log (core/_server/disconnect.py, core/_routing/streaming.py)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from ._support import config, health_row, wait_until


def in_flight(gw, provider_id: str = "a/a") -> int:
    return health_row(gw, provider_id)["in_flight"]


@pytest.mark.parametrize("path", ["/generate", "/v1/chat/completions"])
def test_a_client_that_leaves_cancels_the_upstream_call(gateway, provider, upstream, path):
    upstream.set_behavior("a", {"kind": "ok", "delay_s": 3.0})
    gw = gateway(config(provider("a")))
    body = {"prompt": "hi"} if path == "/generate" else {"messages": [{"role": "user", "content": "hi"}]}
    started = time.monotonic()
    with httpx.Client(base_url=gw.url, timeout=0.3) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post(path, json=body)
    assert wait_until(lambda: in_flight(gw) == 0, timeout=1.5), "the upstream call outlived its client"
    assert time.monotonic() - started < 2.0
    assert health_row(gw, "a/a")["state"] == "healthy"
    assert health_row(gw, "a/a")["consecutive_failures"] == 0, "a cancellation counted against the provider"
    line, = gw.log_lines()
    assert (line["success"], line["error_kind"]) == (False, "cancelled")
    assert line["latency_ms"] < 1500


def test_a_client_that_leaves_mid_stream_cancels_it(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "stream_stall", "cut_after": 2})
    gw = gateway(config(provider("a")))
    with httpx.Client(base_url=gw.url, timeout=5) as client:
        with client.stream("POST", "/generate", json={"prompt": "tell me more", "stream": True}) as answer:
            assert answer.status_code == 200
            first = next(answer.iter_bytes())
            assert b"delta" in first
    assert wait_until(lambda: in_flight(gw) == 0, timeout=2), "the upstream stream outlived its client"
    line, = gw.log_lines()
    assert (line["success"], line["error_kind"]) == (False, "cancelled")
    assert line["completion_tokens"] > 0, "the tokens already streamed are recorded"


@pytest.mark.parametrize("path", ["/generate", "/v1/chat/completions"])
def test_a_client_that_leaves_while_sending_its_body_is_no_error(gateway, provider, upstream, path, caplog):
    """Half a body, then the connection closes: nothing to answer, nothing to log as an error."""
    gw = gateway(config(provider("a")))
    url = urlsplit(gw.url)
    caplog.set_level(logging.INFO)
    caplog.clear()  # what startup said
    with socket.create_connection((url.hostname, url.port), timeout=5) as client:
        client.sendall(f"POST {path} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
                       f"content-length: 100\r\n\r\n{{\"prompt\": ".encode())
        time.sleep(0.2)  # the gateway is now waiting for the rest of the body
    time.sleep(0.5)  # the disconnect reaches the route at once; give it time to be (mis)reported
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == []
    assert upstream.calls == {}


def test_a_client_that_leaves_during_a_backoff_stops_the_retries(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "status", "status": 503})
    gw = gateway(config(provider("a"), retries=4, backoff_initial_s=1.0, backoff_max_s=1.0, failure_threshold=100))
    with httpx.Client(base_url=gw.url, timeout=0.3) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post("/generate", json={"prompt": "hi"})
    time.sleep(1.5)
    assert upstream.calls["a"] == 1, "the gateway went on retrying for a client that had left"


def test_shutdown_lets_requests_in_flight_finish_and_flushes_the_log(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "ok", "delay_s": 0.6})
    gw = gateway(config(provider("a")))
    result = {}

    def request() -> None:
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            result["answer"] = client.post("/generate", json={"prompt": "in flight"})

    worker = threading.Thread(target=request)
    worker.start()
    assert wait_until(lambda: upstream.calls["a"] == 1, timeout=3)
    lines = gw.log_lines()  # stops the gateway while the request is in flight
    worker.join(5)
    assert result["answer"].status_code == 200, result["answer"].text
    assert [(line["success"], line["request_id"]) for line in lines] == [
        (True, result["answer"].json()["request_id"])]
