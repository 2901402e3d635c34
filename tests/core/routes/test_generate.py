"""core/_server/routes/generate.py: POST /generate, its answer, and how it refuses a bad request."""

from __future__ import annotations

import json
import re

import pytest

CANARY = "CANARY-body-value-9d41"  # put in bad bodies: no error may echo it back


@pytest.fixture(scope="module")
def shared_gateway(module_gateway, fake_upstream_server):
    """One gateway for the tests here that leave nothing behind in it."""
    main = {"name": "main", "endpoint": fake_upstream_server.chat_url, "model": "main-model", "cost_per_1k_tokens": 0.5}
    return module_gateway({"providers": [main]})


@pytest.fixture
def gw(shared_gateway, upstream):
    return shared_gateway


def test_answer_shape_and_headers(gw, upstream):
    answer = gw.generate({"prompt": "hello world", "max_tokens": 50, "temperature": 0.2})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert {"modelUsed", "tokens", "cost", "response", "provider", "latency_ms", "attempts", "request_id"} <= set(body)
    assert body["modelUsed"] == "main-model"
    assert body["response"] == "Fake reply from main-model: hello world"
    assert body["provider"] == "main/main-model"
    assert body["attempts"] == 1
    assert body["tokens"] == 2 + 6
    assert body["cost"] == pytest.approx(8 * 0.5 / 1000)
    assert isinstance(body["latency_ms"], (int, float)) and body["latency_ms"] >= 0
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
    assert answer.headers["x-request-id"] == body["request_id"]
    assert answer.headers["x-modelbroker-provider"] == "main/main-model"
    assert answer.headers["x-modelbroker-attempts"] == "1"
    assert float(answer.headers["x-modelbroker-cost"]) == pytest.approx(body["cost"])
    (sent,) = upstream.requests
    assert sent["json"]["model"] == "main-model"
    assert sent["json"]["messages"] == [{"role": "user", "content": "hello world"}]
    assert sent["json"]["max_tokens"] == 50 and sent["json"]["temperature"] == 0.2


def test_client_request_id_is_kept_when_sane(gw):
    assert gw.generate({"prompt": "hi"}, headers={"x-request-id": "trace-42.a:b_c"}).json()["request_id"] == "trace-42.a:b_c"
    replaced = gw.generate({"prompt": "hi"}, headers={"x-request-id": "bad id with spaces"}).json()["request_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", replaced)


def test_double_encoded_body_is_accepted(gw):
    data = {"prompt": "hello twice", "max_tokens": 20}
    # what requests.post(url, json=json.dumps(data)) sends: a JSON string holding the object
    answer = gw.generate(json.dumps(data))
    assert answer.status_code == 200, answer.text
    assert answer.json()["response"].endswith("hello twice")
    raw = gw.generate(content=json.dumps(json.dumps(data)))
    assert raw.status_code == 200, raw.text


BAD_BODIES = [
    pytest.param(f"not json {CANARY}", 400, "invalid_json", None, "not valid JSON", id="not-json"),
    pytest.param("", 400, "invalid_json", None, "not valid JSON", id="empty-body"),
    pytest.param(json.dumps([CANARY]), 400, "invalid_body", None, "must be a JSON object", id="array"),
    pytest.param(json.dumps(CANARY), 400, "invalid_json", None, "not valid JSON", id="plain-string"),
    pytest.param(json.dumps(json.dumps([CANARY])), 400, "invalid_body", None, "must be a JSON object", id="double-encoded-array"),
    pytest.param("42", 400, "invalid_body", None, "must be a JSON object", id="number"),
    pytest.param(json.dumps({"text": CANARY}), 422, "invalid_field", "prompt", "prompt: is required", id="missing-prompt"),
    pytest.param(json.dumps({"prompt": ""}), 422, "invalid_field", "prompt", "prompt: must not be empty", id="empty-prompt"),
    pytest.param(json.dumps({"prompt": [CANARY]}), 422, "invalid_field", "prompt", "prompt: must be a string", id="prompt-list"),
    pytest.param(json.dumps({"prompt": 12345}), 422, "invalid_field", "prompt", "prompt: must be a string", id="prompt-number"),
    pytest.param(json.dumps({"prompt": None}), 422, "invalid_field", "prompt", "prompt: must be a string", id="prompt-null"),
    pytest.param(json.dumps({"prompt": "x", "max_tokens": CANARY}), 422, "invalid_field", "max_tokens",
                 "max_tokens: must be an integer", id="max-tokens-string"),
    pytest.param(json.dumps({"prompt": "x", "max_tokens": 2.5}), 422, "invalid_field", "max_tokens",
                 "max_tokens: must be an integer", id="max-tokens-float"),
    pytest.param(json.dumps({"prompt": "x", "max_tokens": 0}), 422, "invalid_field", "max_tokens",
                 "max_tokens: must be > 0", id="max-tokens-zero"),
    pytest.param(json.dumps({"prompt": "x", "temperature": CANARY}), 422, "invalid_field", "temperature",
                 "temperature: must be a number", id="temperature-string"),
    pytest.param(json.dumps({"prompt": "x", "temperature": 7}), 422, "invalid_field", "temperature",
                 "temperature: must be <= 2", id="temperature-too-high"),
    pytest.param(json.dumps({"prompt": "x", "strategy": 5}), 422, "invalid_field", "strategy",
                 "strategy: must be a string", id="strategy-number"),
    pytest.param(json.dumps({"prompt": "x", "api_base": f"http://{CANARY}"}), 422, "invalid_field", "api_base",
                 "api_base: unknown field", id="unknown-field-api_base"),
    pytest.param(json.dumps({"prompt": "x", "model": CANARY}), 422, "invalid_field", "model",
                 "model: unknown field", id="unknown-field-model"),
]


@pytest.mark.parametrize(("content", "status", "code", "param", "message"), BAD_BODIES)
def test_invalid_body_is_refused_naming_the_field(gw, upstream, content, status, code, param, message):
    answer = gw.generate(content=content)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert message in error["message"]
    assert CANARY not in answer.text
    assert upstream.calls == {}


def test_several_problems_are_all_named(gw):
    answer = gw.generate({"max_tokens": "lots", "colour": "blue"})
    assert answer.status_code == 422
    message = answer.json()["error"]["message"]
    for field in ("prompt", "max_tokens", "colour"):
        assert f"{field}:" in message
    assert "lots" not in message and "blue" not in message


@pytest.mark.parametrize("field", ["max_tokens", "temperature"])
def test_boolean_is_not_a_number(gw, upstream, field):
    answer = gw.generate({"prompt": "x", field: True})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["param"] == field


def test_unknown_strategy_in_the_request_lists_installed(gw, upstream, installed_strategies):
    answer = gw.generate({"prompt": "x", "strategy": "fastest"})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "unknown_strategy"
    assert error["param"] == "strategy"
    assert error["message"] == f"unknown strategy 'fastest'; installed strategies: {', '.join(installed_strategies)}"
    assert upstream.calls == {}


def test_request_strategy_is_used(gateway, provider, upstream):
    gw = gateway({"providers": [provider("dear", priority=1, cost_per_1k_tokens=9), provider("cheap", priority=2)]})
    assert gw.generate({"prompt": "x"}).json()["provider"] == "dear/dear"
    assert gw.generate({"prompt": "x", "strategy": "cost"}).json()["provider"] == "cheap/cheap"


def test_get_is_not_allowed(gw):
    answer = gw.get("/generate")
    assert answer.status_code == 405
    assert "error" in answer.json()
