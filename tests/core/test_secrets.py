"""No API key anywhere a user or an operator can see it: responses, headers, app.log, logs.

The fake upstream never repeats a key, so this module adds a small upstream that does,
as real ones do ("Incorrect API key provided: sk-..."): in a 401 message, in a body that
is not JSON, in a malformed 200 and in a response header. The gateway must pass the
upstream's words on with the key masked.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

KEY = "sk-live-TESTKEY-9f8e7d6c5b4a39281706"
OTHER_KEY = "gsk_literal_in_yaml_0123456789abcdefXYZ"


def assert_no_key(text: str) -> None:
    for key in (KEY, OTHER_KEY):
        assert key not in text
        assert key[:12] not in text


class KeyEchoHandler(BaseHTTPRequestHandler):
    """An upstream that repeats the bearer token it got, in every way it can."""

    received: list[str] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("content-length") or 0))
        token = self.headers.get("authorization", "").removeprefix("Bearer ")
        self.received.append(token)
        if "/unauthorized/" in self.path:
            body = json.dumps({"error": {"message": f"Incorrect API key provided: {token}.", "code": "invalid_api_key"}})
            self._send(401, body, "application/json", token)
        elif "/plain500/" in self.path:
            self._send(500, f"upstream crashed while checking key {token}", "text/plain", token)
        elif "/malformed/" in self.path:
            self._send(200, f"{token} <- not a chat completion", "application/json", token)
        else:
            self._send(404, "{}", "application/json", token)

    def _send(self, status: int, body: str, content_type: str, token: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.send_header("x-echo-key", token)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture(scope="module")
def echo_upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeyEchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def keyed(monkeypatch, provider, echo_upstream):
    """``keyed(name, kind_or_model)``: a provider with the secret key, on the echo upstream or the fake."""
    monkeypatch.setenv("MB_SECRET_TEST_KEY", KEY)
    KeyEchoHandler.received.clear()

    def make(name: str, where: str, **fields):
        if where in ("unauthorized", "plain500", "malformed"):
            fields["endpoint"] = f"{echo_upstream}/{where}/v1/chat/completions"
            return provider(name, api_key="${MB_SECRET_TEST_KEY}", **fields)
        return provider(name, model=where, api_key="${MB_SECRET_TEST_KEY}", **fields)

    return make


def everything_seen(gw) -> str:
    """Every response body and header the client got."""
    parts = []
    for response in gw.responses:
        parts.append(response.text)
        parts.extend(f"{k}: {v}" for k, v in response.headers.items())
    return "\n".join(parts)


def test_no_key_in_responses_headers_or_app_log(gateway, provider, keyed, upstream, caplog):
    failing = [
        keyed("unauthorized", "unauthorized", priority=1),
        keyed("plain500", "plain500", priority=2),
        keyed("malformed", "malformed", priority=3),
        keyed("fake500", "fail-500", priority=4),
        provider("literal", model="fail-503", api_key=OTHER_KEY, priority=5),
    ]
    gw = gateway({
        "reliability": {"retries": 0, "max_attempts": 10},
        "plugins": {"file_log": {"include_prompts": True, "include_responses": True}},
        "providers": [*failing, keyed("good", "good-model", priority=6)],
    })
    with caplog.at_level(logging.INFO):  # what `modelbroker serve` logs (httpcore DEBUG dumps headers)
        ok = gw.generate({"prompt": "hello"})
        gw.get("/health")
    assert ok.status_code == 200, ok.text
    assert ok.json()["provider"] == "good/good-model"
    # the key was really in play: every upstream got it
    assert KeyEchoHandler.received == [KEY, KEY, KEY]
    assert {r["headers"].get("authorization") for r in upstream.requests} == {f"Bearer {KEY}", f"Bearer {OTHER_KEY}"}

    lines = gw.log_lines()
    assert len(lines) == 6
    by_provider = {line["provider"]: line for line in lines}
    assert by_provider["unauthorized"]["status"] == 401
    assert "Incorrect API key provided: ***" in by_provider["unauthorized"]["error"]  # the message, masked
    assert "upstream crashed while checking key ***" in by_provider["plain500"]["error"]
    assert by_provider["malformed"]["error_kind"] == "malformed"
    assert_no_key(gw.log_file.read_text())
    assert_no_key(everything_seen(gw))
    assert_no_key("\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records))


def test_no_key_in_the_502(gateway, keyed, upstream):
    gw = gateway({
        "reliability": {"retries": 0},
        "providers": [
            keyed("unauthorized", "unauthorized", priority=1),
            keyed("plain500", "plain500", priority=2),
            keyed("malformed", "malformed", priority=3),
        ],
    })
    answer = gw.generate({"prompt": "hello"})
    assert answer.status_code == 502
    attempts = answer.json()["error"]["attempts"]
    assert [(a["provider"], a.get("status")) for a in attempts] == [
        ("unauthorized/unauthorized", 401), ("plain500/plain500", 500), ("malformed/malformed", None),
    ]
    assert "***" in attempts[0]["message"]
    openai_route = gw.client.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    gw.responses.append(openai_route)
    assert openai_route.status_code >= 500
    assert set(KeyEchoHandler.received) == {KEY}
    assert_no_key(everything_seen(gw))
    assert_no_key(gw.log_file.read_text() if gw.log_file.exists() else "")
    assert_no_key(json.dumps(gw.log_lines()))
