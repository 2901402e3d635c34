"""Tests for core.fake_upstream: a real socket-level fake OpenAI upstream."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import openai
import pytest

from modelbroker.fake_upstream import Behavior, FakeUpstream

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello big world"}]
STREAM = {"model": "m1", "messages": MSGS, "stream": True}


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as up:
        yield up


@pytest.fixture(autouse=True)
def _clean(upstream):
    upstream.reset()
    yield


@pytest.fixture
def client():
    with httpx.Client(timeout=2.0) as c:
        yield c


def chat(client: httpx.Client, upstream: FakeUpstream, model: str = "m1", **extra) -> httpx.Response:
    return client.post(upstream.chat_url, json={"model": model, "messages": MSGS, **extra})


def sse_events(lines, into: list | None = None) -> list:
    """Collect SSE data payloads; appends to ``into`` as they arrive (kept if the stream fails)."""
    out = [] if into is None else into
    for line in lines:
        if line.startswith("data: "):
            out.append(line[len("data: "):])
    return out


def test_ok_response_shape_and_usage(upstream, client):
    r = chat(client, upstream)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"].startswith("chatcmpl-fake-") and body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["model"] == "m1"
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": "Fake reply from m1: hello big world"}
    assert body["usage"] == {"prompt_tokens": 2 + 3, "completion_tokens": 7, "total_tokens": 12}


def test_content_parts_and_reply_override(upstream, client):
    upstream.set_behavior("m1", {"reply": "one two"})
    parts = [{"role": "user", "content": [{"type": "text", "text": "a b"}, {"type": "image_url"}]}]
    body = client.post(upstream.chat_url, json={"model": "m1", "messages": parts}).json()
    assert body["choices"][0]["message"]["content"] == "one two"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}


def test_tools_produce_tool_call(upstream, client):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    choice = chat(client, upstream, tools=tools).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [{"id": "call_fake_1", "type": "function",
                                                "function": {"name": "get_weather", "arguments": "{}"}}]


def test_stream_event_sequence_with_usage(upstream, client):
    payload = {"model": "m1", "messages": MSGS, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", upstream.chat_url, json=payload) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["transfer-encoding"] == "chunked"
        events = sse_events(r.iter_lines())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0]["delta"]["content"] for c in chunks[1:4]]
    assert len(content) == 3 and "".join(content) == "Fake reply from m1: hello big world"
    assert chunks[4]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[5]["choices"] == [] and chunks[5]["usage"]["total_tokens"] == 12
    assert len(chunks) == 6


def test_stream_without_usage_and_keepalive_reuse(upstream, client):
    for _ in range(2):  # second request reuses the keep-alive connection after a chunked stream
        with client.stream("POST", upstream.chat_url, json=STREAM) as r:
            events = sse_events(r.iter_lines())
        assert events[-1] == "[DONE]" and len(events) == 1 + 3 + 1 + 1
    assert upstream.calls["m1"] == 2


def test_stream_chunks_arrive_incrementally(upstream, client):
    upstream.set_behavior("m1", Behavior(chunks=4, chunk_delay_s=0.2))
    start = time.monotonic()
    first_content = None
    with client.stream("POST", upstream.chat_url, json=STREAM) as r:
        for line in r.iter_lines():
            if first_content is None and '"content":"F' in line:
                first_content = time.monotonic() - start
    total = time.monotonic() - start
    assert first_content is not None and first_content < 0.15
    assert 0.55 < total < 1.5


def test_status_429_with_retry_after(upstream, client):
    upstream.set_behavior("m1", {"kind": "status", "status": 429, "headers": {"Retry-After": "2"},
                                 "error_code": "rate_limit_exceeded"})
    r = chat(client, upstream)
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    err = r.json()["error"]
    assert err["message"] == "fake upstream error 429"
    assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"


def test_malformed_and_empty_choices(upstream, client):
    upstream.set_behavior("m1", "malformed")
    r = chat(client, upstream)
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    upstream.set_behavior("m1", "empty_choices")
    body = chat(client, upstream).json()
    assert body["choices"] == [] and body["object"] == "chat.completion"


def test_drop_closes_without_response(upstream, client):
    upstream.set_behavior("m1", "drop")
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client, upstream)
    assert upstream.calls["m1"] == 1


def test_reset_mid_body_raises(upstream, client):
    upstream.set_behavior("m1", "reset_mid_body")
    with pytest.raises(httpx.TransportError):
        chat(client, upstream)


def test_stream_cut_ends_without_done(upstream, client):
    upstream.set_behavior("m1", {"kind": "stream_cut", "cut_after": 1})
    seen: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", upstream.chat_url, json=STREAM) as r:
            sse_events(r.iter_lines(), seen)
    assert len(seen) == 2 and "[DONE]" not in seen


def test_stream_stall_hits_read_timeout(upstream):
    upstream.set_behavior("m1", {"kind": "stream_stall", "cut_after": 2})
    seen: list[str] = []
    start = time.monotonic()
    with httpx.Client(timeout=httpx.Timeout(2.0, read=0.5)) as c:
        with pytest.raises(httpx.ReadTimeout):
            with c.stream("POST", upstream.chat_url, json=STREAM) as r:
                sse_events(r.iter_lines(), seen)
    assert len(seen) == 3 and time.monotonic() - start < 1.5


def test_stream_error_event(upstream, client):
    upstream.set_behavior("m1", {"kind": "stream_error_event", "cut_after": 1})
    with client.stream("POST", upstream.chat_url, json=STREAM) as r:
        events = sse_events(r.iter_lines())
    assert len(events) == 3
    assert json.loads(events[-1]) == {"error": {"message": "fake mid-stream error", "type": "server_error"}}


def test_delay_and_slow_first_byte(upstream, client):
    upstream.set_behavior("m1", {"kind": "slow_first_byte", "delay_s": 0.3})
    start = time.monotonic()
    assert chat(client, upstream).status_code == 200
    assert 0.3 <= time.monotonic() - start < 1.0


def test_times_reverts_to_ok(upstream, client):
    upstream.set_behavior("m1", {"kind": "status", "status": 500, "times": 1})
    assert chat(client, upstream).status_code == 500
    assert chat(client, upstream).status_code == 200
    assert upstream.calls["m1"] == 2


def test_wildcard_default_and_explicit_wins(upstream, client):
    upstream.set_behavior("*", {"kind": "status", "status": 502})
    upstream.set_behavior("good", "ok")
    assert chat(client, upstream, model="any").status_code == 502
    assert chat(client, upstream, model="good").status_code == 200
    upstream.set_behavior("fail-503", "ok")
    upstream.set_behavior("*", "ok")
    assert chat(client, upstream, model="fail-503").status_code == 200


def test_model_name_conventions(upstream, client):
    r = chat(client, upstream, model="fail-503")
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
    assert chat(client, upstream, model="fail-429").status_code == 429
    with pytest.raises(json.JSONDecodeError):
        json.loads(chat(client, upstream, model="malformed").content)
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client, upstream, model="drop")
    with httpx.Client(timeout=0.3) as c, pytest.raises(httpx.ReadTimeout):
        chat(c, upstream, model="slow")


def test_control_endpoints_over_http(upstream, client):
    r = client.post(upstream.url + "/_fake/behavior",
                    json={"model": "m2", "behavior": {"kind": "status", "status": 503}})
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert chat(client, upstream, model="m2").status_code == 503
    assert client.get(upstream.url + "/_fake/stats").json()["calls"] == {"m2": 1}
    bad = client.post(upstream.url + "/_fake/behavior", json={"model": "m2", "behavior": "nope"})
    assert bad.status_code == 400 and "stream_stall" in bad.json()["error"]
    assert client.post(upstream.url + "/_fake/reset").json() == {"ok": True}
    assert client.get(upstream.url + "/_fake/stats").json()["calls"] == {}
    assert chat(client, upstream, model="m2").status_code == 200


def test_counters_and_recorded_requests(upstream, client):
    chat(client, upstream, model="a")
    chat(client, upstream, model="a")
    chat(client, upstream, model="b")
    assert upstream.calls == {"a": 2, "b": 1}
    last = upstream.requests[-1]
    assert last["path"] == "/v1/chat/completions" and last["model"] == "b"
    assert last["json"]["messages"] == MSGS and last["headers"]["content-type"] == "application/json"
    models = client.get(upstream.url + "/v1/models").json()
    assert {m["id"] for m in models["data"]} == {"a", "b"}


def test_bad_requests(upstream, client):
    r = client.post(upstream.chat_url, content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert upstream.requests[-1]["json"] is None
    assert client.get(upstream.url + "/nope").status_code == 404
    with pytest.raises(ValueError, match="stream_cut"):
        upstream.set_behavior("m1", "bogus")
    with pytest.raises(ValueError):
        upstream.set_behavior("m1", {"kind": "ok", "colour": "red"})


def test_raw_keepalive_and_connection_close(upstream):
    body = b'{"model":"raw","messages":[{"role":"user","content":"x"}]}'
    req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body), body)
    last = req.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    with socket.create_connection(("127.0.0.1", upstream.port), timeout=2) as s:
        s.sendall(req + req + last)  # pipelined on one connection
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 3 and b"connection: close" in data
    assert upstream.calls["raw"] == 3


def test_client_disconnect_mid_stream_is_harmless(upstream, client):
    upstream.set_behavior("m1", {"chunks": 5, "chunk_delay_s": 0.05})
    with client.stream("POST", upstream.chat_url, json=STREAM) as r:
        next(r.iter_lines())  # close after the first line
    time.sleep(0.35)
    upstream.set_behavior("m1", "ok")
    assert chat(client, upstream).status_code == 200


def test_many_concurrent_connections(upstream):
    upstream.set_behavior("*", {"delay_s": 0.2})
    body = b'{"model":"c","messages":[{"role":"user","content":"x"}]}'
    req = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
        len(body), body)

    async def one() -> bytes:  # raw client: httpx's pool is too slow to measure the server here
        reader, writer = await asyncio.open_connection("127.0.0.1", upstream.port)
        writer.write(req)
        data = await reader.read()
        writer.close()
        return data.split(b"\r\n", 1)[0]

    async def run() -> list[bytes]:
        return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(300))), 3)

    start = time.monotonic()
    assert asyncio.run(run()) == [b"HTTP/1.1 200 OK"] * 300
    assert time.monotonic() - start < 1.5 and upstream.calls["c"] == 300


def test_stop_closes_stalled_connection_promptly():
    up = FakeUpstream().start()
    up.set_behavior("*", "stream_stall")
    outcome: dict = {}

    def consume() -> None:
        try:
            with httpx.Client(timeout=5) as c:
                with c.stream("POST", up.chat_url, json={**STREAM, "model": "s"}) as r:
                    outcome["events"] = sse_events(r.iter_lines())
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=consume)
    t.start()
    deadline = time.monotonic() + 2
    while up.calls["s"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    start = time.monotonic()
    up.stop()
    t.join(timeout=2)
    assert not t.is_alive() and time.monotonic() - start < 1.0
    assert "error" in outcome or "[DONE]" not in outcome.get("events", [])
    up.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(up.url + "/_fake/stats", timeout=1)


def test_openai_client_plain_and_stream(upstream):
    oa = openai.OpenAI(base_url=upstream.url + "/v1", api_key="x", timeout=2, max_retries=0)
    resp = oa.chat.completions.create(model="gpt-fake", messages=MSGS)
    assert resp.choices[0].message.content == "Fake reply from gpt-fake: hello big world"
    assert resp.usage.total_tokens == 12
    stream = oa.chat.completions.create(model="gpt-fake", messages=MSGS, stream=True,
                                        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Fake reply from gpt-fake: hello big world"
    assert chunks[-1].usage.total_tokens == 12
    assert upstream.requests[-1]["headers"]["authorization"] == "Bearer x"


def test_python_m_runs_it_from_a_shell(free_port, subprocess_env, tmp_path):
    """``python -m modelbroker.fake_upstream``: the fake for curl, with every installed adapter's endpoint."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "modelbroker.fake_upstream", "--port", str(free_port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                               env=subprocess_env())
    try:
        banner = [process.stdout.readline() for _ in range(4)]
        assert banner[0].strip() == (f"fake upstream listening on http://127.0.0.1:{free_port}; "
                                     "endpoints by provider type:")
        endpoints = dict(line.split() for line in banner[1:])
        assert endpoints == {"anthropic": f"http://127.0.0.1:{free_port}/v1/messages",
                             "gemini": f"http://127.0.0.1:{free_port}/v1beta/models",
                             "openai": f"http://127.0.0.1:{free_port}/v1/chat/completions"}
        started = time.monotonic()
        answer = httpx.post(endpoints["openai"], json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                            timeout=10)
        assert answer.json()["choices"][0]["message"]["content"] == "Fake reply from m: hi"
        assert time.monotonic() - started < 10
    finally:
        process.terminate()
        process.wait(timeout=10)
