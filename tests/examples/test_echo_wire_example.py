"""examples/modelbroker-echo-wire, installed with pip: adapter ``type: echowire`` in a real gateway.

The gateway calls the example's fake EchoWire server (a real HTTP server on
127.0.0.1) for /generate and /v1/chat/completions, whole and streamed; the
plugin can be disabled from the environment.
"""

from __future__ import annotations

import json

import httpx
import pytest

from modelbroker.testing import free_port

HELLO = [{"role": "user", "content": "Hello there"}]
WRONG_KEY = "ew-wrong-key-fedcba9876543210"


@pytest.fixture(scope="module")
def gw(serve, examples_site, _echowire_server, fake_echowire_module):
    """One gateway for the module: ``echo`` with the right key (tried first), ``locked`` with a wrong one."""
    def entry(name: str, model: str, key: str, priority: int) -> dict:
        return {"name": name, "type": "echowire", "endpoint": _echowire_server.url, "model": model,
                "api_key": key, "priority": priority, "cost_per_1k_tokens": 0.5}

    return serve({"reliability": {"retries": 0, "failure_threshold": 1000}, "providers": [
        entry("echo", "echo-1", fake_echowire_module.TEST_KEY, 0),
        entry("locked", "echo-locked", WRONG_KEY, 1),
    ]}, examples_site)


def events(response: httpx.Response) -> list:
    """The ``data:`` payloads of a server-sent event stream, JSON-decoded where they are JSON."""
    found = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            found.append(data if data == "[DONE]" else json.loads(data))
    return found


def test_requests_are_answered_through_echowire(gw, echowire, fake_echowire_module):
    key = fake_echowire_module.TEST_KEY
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        generated = client.post("/generate", json={"prompt": "Hello there"})
        chat = client.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2})
        streamed = client.post("/generate", json={"prompt": "Hello there", "stream": True})
        chat_streamed = client.post("/v1/chat/completions", json={"messages": HELLO, "stream": True})

    assert generated.status_code == 200, generated.text
    assert generated.headers["x-modelbroker-provider"] == "echo/echo-1"
    answer = generated.json()
    assert (answer["response"], answer["modelUsed"], answer["tokens"]) == ("echo: Hello there", "echo-1", 5)

    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"] == "echo: Hello"  # max_tokens became max_out
    assert chat.json()["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}

    assert streamed.headers["content-type"].startswith("text/event-stream")
    *deltas, done = events(streamed)
    assert deltas == [{"delta": "echo:"}, {"delta": " Hello"}, {"delta": " there"}]
    assert done["done"] is True and done["tokens"] == 5

    assert chat_streamed.headers["x-modelbroker-provider"] == "echo/echo-1"
    *chunks, finish, end = events(chat_streamed)
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "echo: Hello there"
    assert finish["choices"][0]["finish_reason"] == "stop" and end == "[DONE]"

    assert echowire.calls["echo-1"] == 4
    assert {headers["x-echowire-key"] for headers, _ in echowire.requests} == {key}
    assert echowire.requests[1][1] == {"input": "Hello there", "model": "echo-1", "max_out": 2}


def test_upstream_errors_become_provider_errors(gw, echowire):
    echowire.fail("echo-1", 503)
    fallen_back = httpx.post(gw.url + "/generate", json={"prompt": "hi"}, timeout=10)
    assert fallen_back.status_code == 502
    attempts = fallen_back.json()["error"]["attempts"]
    assert [(a["provider"], a["error"], a["status"]) for a in attempts] == [
        ("echo/echo-1", "status", 503), ("locked/echo-locked", "status", 401),
    ]
    assert attempts[0]["message"] == "upstream answered 503: the model is overloaded"
    assert attempts[1]["message"] == "upstream answered 401: unknown key '***'"  # the key is masked
    assert WRONG_KEY not in fallen_back.text and WRONG_KEY not in gw.output()


def test_disabled_from_the_environment_the_type_is_unknown(
    examples_site, write_config, run_cli, subprocess_env, installed_adapter_types
):
    config = write_config({"providers": [{"name": "echo", "type": "echowire", "model": "echo-1",
                                          "endpoint": "http://127.0.0.1:9/v1/echo", "cost_per_1k_tokens": 0}]})
    env = examples_site.env(subprocess_env, MODELBROKER_DISABLED_PLUGINS="echowire", MODELBROKER_LOG_FILE="")
    done = run_cli("serve", "--config", str(config), "--port", str(free_port()), env=env, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "echowire" not in installed_adapter_types
    assert done.stderr.strip().splitlines()[-1] == (
        f"modelbroker: {config.name}: providers[0].type: no installed adapter handles type 'echowire' "
        f"(provider 'echo'); installed adapter types: {', '.join(installed_adapter_types)}"
    )
