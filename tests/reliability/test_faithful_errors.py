"""When every provider refused the request itself, the client is told what the upstream said:
its status, message, type, code and param, so the OpenAI SDK raises BadRequestError (and
litellm its ContextWindowExceededError). A provider-side failure stays the gateway's 502,
naming no endpoint and no key (docs/reliability.md, 'What the client is told')."""

from __future__ import annotations

import openai
import pytest

SECRET = "sk-faithful-test-SECRET-0123456789abcdef"
HI = [{"role": "user", "content": "hi"}]


def rejects(message: str, *, status: int = 400, type: str = "invalid_request_error",  # noqa: A002
            code: str | None = None, param: str | None = None) -> dict:
    return {"kind": "status", "status": status,
            "body": {"error": {"message": message, "type": type, "param": param, "code": code}}}


@pytest.fixture
def start(gateway, provider):
    def run(*names: str):
        entries = [provider(name, priority=i, api_key=SECRET) for i, name in enumerate(names)]
        gw = gateway({"reliability": {"retries": 0, "failure_threshold": 1000}, "providers": entries})
        return gw, openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)

    return run


def test_an_invalid_request_is_the_clients_400_with_the_upstreams_words(start, upstream):
    upstream.set_behavior("a", rejects("'temperature' must be at most 2", param="temperature",
                                       code="invalid_value"))
    gw, client = start("a")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="auto", messages=HI)
    error = caught.value
    assert error.status_code == 400
    assert error.body["message"] == "'temperature' must be at most 2"
    assert error.message == "Error code: 400 - 'temperature' must be at most 2"  # the SDK's own prefix
    assert (error.type, error.code, error.param) == ("invalid_request_error", "invalid_value", "temperature")
    assert error.response.headers["x-should-retry"] == "false"
    assert error.body["attempts"][0]["status"] == 400


def test_when_every_provider_refuses_the_last_ones_words_are_told(start, upstream):
    upstream.set_behavior("a", rejects("a says no", param="messages"))
    upstream.set_behavior("b", rejects("b says no", status=422, param="tools", type="invalid_request_error"))
    gw, client = start("a", "b")
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(model="auto", messages=HI)
    assert caught.value.body["message"] == "b says no" and caught.value.param == "tools"
    assert [a["provider"] for a in caught.value.body["attempts"]] == ["a/a", "b/b"]


def test_a_prompt_too_long_for_every_provider_is_a_context_length_400(start, upstream):
    upstream.set_behavior("a", rejects("This model's maximum context length is 8192 tokens", param="messages",
                                       code="context_length_exceeded"))
    gw, client = start("a")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="auto", messages=HI)
    assert caught.value.code == "context_length_exceeded"
    assert "maximum context length" in caught.value.message


def test_a_refusal_and_a_provider_fault_together_stay_a_502(start, upstream):
    upstream.set_behavior("a", rejects("a says no"))
    upstream.set_behavior("b", {"kind": "status", "status": 503})
    gw, client = start("a", "b")
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="auto", messages=HI)
    assert caught.value.status_code == 502 and caught.value.code == "all_providers_failed"


@pytest.mark.parametrize("status, type_", [(401, "authentication_error"), (403, "permission_error"),
                                           (404, "not_found_error")])
def test_the_operators_own_key_or_model_trouble_is_a_502_that_shows_no_secret(start, upstream, status, type_):
    upstream.set_behavior("a", rejects(f"Incorrect API key provided: {SECRET}", status=status, type=type_))
    gw, client = start("a")
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="auto", messages=HI)
    text = caught.value.response.text
    assert caught.value.status_code == 502
    assert SECRET not in text and SECRET[:12] not in text
    assert "127.0.0.1" not in text  # the provider's endpoint is not the client's business


def test_an_exhausted_quota_answered_400_is_the_providers(start, upstream):
    upstream.set_behavior("a", rejects("You exceeded your current quota", code="insufficient_quota",
                                       type="insufficient_quota"))
    gw, client = start("a")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="auto", messages=HI)


def test_a_stream_refused_before_content_is_told_the_same_way(start, upstream):
    upstream.set_behavior("a", rejects("stream_options needs stream", param="stream_options"))
    gw, client = start("a")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="auto", messages=HI, stream=True)
    assert caught.value.param == "stream_options"


def test_generate_tells_it_in_the_gateways_shape(start, upstream):
    upstream.set_behavior("a", rejects("bad max_tokens", param="max_tokens"))
    gw, _ = start("a")
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "bad max_tokens"
    assert answer.json()["error"]["param"] == "max_tokens"


def test_a_connection_failure_names_the_provider_not_its_endpoint(gateway, free_port):
    endpoint = f"http://127.0.0.1:{free_port}/v1/chat/completions"
    gw = gateway({"reliability": {"retries": 0}, "providers": [
        {"name": "gone", "endpoint": endpoint, "model": "m", "cost_per_1k_tokens": 0}]})
    answer = gw.chat("hi")
    assert answer.status_code == 502
    [attempt] = answer.json()["error"]["attempts"]
    assert attempt["provider"] == "gone/m" and attempt["error"] == "connect"
    assert str(free_port) not in answer.text and "127.0.0.1" not in answer.text
    assert "the provider's endpoint" in attempt["message"]
    assert str(free_port) in gw.log_lines()[0]["error"]  # the operator's log keeps where
