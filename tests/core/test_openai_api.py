"""POST /v1/chat/completions and GET /v1/models through the official ``openai`` SDK.

Real gateway (uvicorn on loopback, see tests/conftest.py) in front of the real fake
upstream; the SDK is pointed at the gateway with ``base_url``. Clients never retry
(``max_retries=0``) and every call is bounded by a timeout.
"""

from __future__ import annotations

import copy
import time
import uuid

import httpx
import openai
import pytest

SECRET = "sk-modelbroker-api-test-SECRET-4f9a8b7c6d5e"
PRICE = 0.001  # per 1k tokens, the conftest provider default
HELLO = [{"role": "user", "content": "hello big world"}]


#: No retry on the same provider (fallback only) and no circuit breaker tripping within a
#: test, so each test sees exactly the attempts it scripts.
RELIABILITY = {"retries": 0, "failure_threshold": 1000}


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def start(gateway):
    """``start(*providers, **top_level) -> RunningGateway`` with ``RELIABILITY`` unless given."""

    def run(*providers: dict, **top):
        return gateway({"reliability": dict(RELIABILITY), **top, "providers": list(providers)})

    return run


@pytest.fixture(scope="module")
def shared(module_gateway, fake_upstream_server):
    """One gateway for the tests that leave no state behind: a/a (first), b/m2, and ``alias``."""
    url = fake_upstream_server.chat_url
    return module_gateway({"reliability": dict(RELIABILITY), "providers": [
        {"name": "a", "endpoint": url, "model": "a", "cost_per_1k_tokens": PRICE, "api_key": SECRET},
        {"name": "b", "endpoint": url, "model": "m2", "priority": 1, "cost_per_1k_tokens": PRICE},
        {"name": "c", "endpoint": url, "model": "real-model", "id": "alias", "priority": 2,
         "cost_per_1k_tokens": PRICE},
    ]}, log=False)


@pytest.fixture
def two_providers(start, provider):
    """A gateway with providers ``a`` (priority 1) and ``b`` (priority 2), both with an API key."""

    def run(**a_fields):
        return start(provider("a", priority=1, api_key=SECRET, **a_fields),
                     provider("b", priority=2, api_key=SECRET))

    return run


def new_id() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


def for_request(lines: list[dict], rid: str) -> list[dict]:
    return sorted((line for line in lines if line["request_id"] == rid), key=lambda line: line["attempt"])


def fake_reply(model: str, text: str = "hello big world") -> str:
    return f"Fake reply from {model}: {text}"


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text
        assert SECRET[:12] not in text


# --- plain completions ----------------------------------------------------------------------


def test_plain_completion_sync(start, provider, upstream, sdk):
    gw = start(provider("a", api_key=SECRET))
    answer = sdk(gw).chat.completions.create(model="auto", messages=HELLO)
    assert answer.object == "chat.completion"
    assert answer.model == "a"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == fake_reply("a")
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (3, 7, 10)
    assert upstream.requests[-1]["headers"]["authorization"] == f"Bearer {SECRET}"


async def test_plain_completion_async(shared, async_sdk):
    gw = shared
    answer = await async_sdk(gw).chat.completions.create(model="a", messages=HELLO)
    assert answer.choices[0].message.content == fake_reply("a")
    assert answer.usage.total_tokens == 10


def test_response_headers_and_log_line(start, provider, sdk):
    gw = start(provider("a", api_key=SECRET))
    rid = new_id()
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, extra_headers={"x-request-id": rid})
    assert raw.status_code == 200
    assert raw.headers["x-request-id"] == rid
    assert raw.headers["x-modelbroker-provider"] == "a/a"
    assert raw.headers["x-modelbroker-attempts"] == "1"
    assert float(raw.headers["x-modelbroker-cost"]) == pytest.approx(10 * PRICE / 1000)
    assert raw.parse().choices[0].message.content == fake_reply("a")
    [line] = for_request(gw.log_lines(), rid)
    assert line["success"] is True and line["provider_id"] == "a/a"
    assert (line["prompt_tokens"], line["completion_tokens"], line["total_tokens"]) == (3, 7, 10)
    assert "tokens_estimated" not in line
    assert_no_secret(gw.log_file.read_text())


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_overhead_header_leaves_out_the_upstream_wait(start, provider, upstream, sdk, stream):
    """``x-modelbroker-overhead-ms`` is the gateway's own time: an upstream that takes 300 ms
    before answering adds nothing to it, and app.log's ``overhead_ms`` is the same figure."""
    upstream.set_behavior("a", {"kind": "ok", "delay_s": 0.3})
    gw = start(provider("a"))
    rid = new_id()
    began = time.perf_counter()
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, stream=stream, extra_headers={"x-request-id": rid})
    if stream:
        assert "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    else:
        assert raw.parse().choices[0].message.content == fake_reply("a")
    elapsed_ms = (time.perf_counter() - began) * 1000
    overhead = float(raw.headers["x-modelbroker-overhead-ms"])
    assert elapsed_ms >= 300
    assert 0 <= overhead < 150, overhead  # loopback and a loaded CI core, but never the 300 ms wait
    [line] = for_request(gw.log_lines(), rid)
    assert line["overhead_ms"] == overhead


def test_request_id_is_generated_when_absent(shared, sdk):
    gw = shared
    raw = sdk(gw).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert 1 <= len(raw.headers["x-request-id"]) <= 64


# --- passthrough ------------------------------------------------------------------------------


def test_openai_fields_and_unknown_fields_reach_the_upstream_untouched(shared, upstream, sdk):
    gw = shared
    response_format = {"type": "json_schema", "json_schema": {
        "name": "answer", "strict": True,
        "schema": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}
    extra_body = {"x_vendor": {"nested": [1, 2.5, None, {"k": "v"}]}, "guided_choice": ["yes", "no"],
                  "repetition_penalty": 1.1}
    sdk(gw).chat.completions.create(
        model="auto", messages=HELLO, seed=1234, stop=["END", "\n\n"], response_format=response_format,
        max_completion_tokens=77, top_p=0.25, user="user-42", temperature=0.3, max_tokens=55,
        presence_penalty=0.5, frequency_penalty=-0.5, logprobs=True, top_logprobs=2, n=1,
        logit_bias={"50256": -100}, metadata={"team": "qa"}, extra_body=extra_body,
    )
    sent = upstream.requests[-1]["json"]
    assert sent["model"] == "a"
    assert sent["messages"] == HELLO
    expected = {
        "seed": 1234, "stop": ["END", "\n\n"], "response_format": response_format, "max_completion_tokens": 77,
        "top_p": 0.25, "user": "user-42", "temperature": 0.3, "max_tokens": 55, "presence_penalty": 0.5,
        "frequency_penalty": -0.5, "logprobs": True, "top_logprobs": 2, "n": 1,
        "logit_bias": {"50256": -100}, "metadata": {"team": "qa"}, **extra_body,
    }
    for key, value in expected.items():
        assert sent.get(key) == value, key
    assert "stream" not in sent


def test_stop_as_a_string_is_passed_through(shared, upstream, sdk):
    gw = shared
    sdk(gw).chat.completions.create(model="auto", messages=HELLO, stop="STOP")
    assert upstream.requests[-1]["json"]["stop"] == "STOP"


def test_client_model_never_reaches_the_upstream(shared, upstream, sdk):
    gw = shared
    sdk(gw).chat.completions.create(model="alias", messages=HELLO)
    assert upstream.requests[-1]["json"]["model"] == "real-model"


def test_tools_passthrough_and_tool_call_answer(shared, upstream, sdk):
    gw = shared
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city", "strict": True,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": False}}}]
    tool_choice = {"type": "function", "function": {"name": "get_weather"}}
    answer = sdk(gw).chat.completions.create(
        model="auto", messages=HELLO, tools=copy.deepcopy(tools), tool_choice=tool_choice, parallel_tool_calls=False)
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    [call] = message.tool_calls
    assert call.id == "call_fake_1" and call.type == "function"
    assert call.function.name == "get_weather" and call.function.arguments == "{}"
    sent = upstream.requests[-1]["json"]
    assert sent["tools"] == tools
    assert sent["tool_choice"] == tool_choice
    assert sent["parallel_tool_calls"] is False


def test_tool_choice_as_string_passthrough(shared, upstream, sdk):
    gw = shared
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    sdk(gw).chat.completions.create(model="auto", messages=HELLO, tools=tools, tool_choice="required")
    assert upstream.requests[-1]["json"]["tool_choice"] == "required"


def test_content_part_arrays_and_every_role(shared, upstream, sdk):
    gw = shared
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "developer", "content": "answer in English"},
        {"role": "user", "content": "what is the weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
        {"role": "user", "content": [
            {"type": "text", "text": "thanks,"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            {"type": "text", "text": "and tomorrow?"}]},
    ]
    answer = sdk(gw).chat.completions.create(model="auto", messages=copy.deepcopy(messages))
    assert answer.choices[0].message.content == fake_reply("a", "thanks, and tomorrow?")
    assert upstream.requests[-1]["json"]["messages"] == messages


# --- routing: model -----------------------------------------------------------------------------


@pytest.fixture
def routed_gateway(start, provider, upstream):
    """x/shared and y/shared share a model; z/other is first by priority. Each has its own path."""

    def at(name: str, model: str, priority: int) -> dict:
        return provider(name, model=model, priority=priority,
                        endpoint=f"{upstream.url}/{name}/v1/chat/completions")

    return start(at("z", "other", 0), at("x", "shared", 1), at("y", "shared", 2),
                                  at("groq", "g1", 3), at("groq", "g2", 4))


def called_paths(upstream) -> list[str]:
    return [r["path"].split("/")[1] for r in upstream.requests]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_pinned_by_id_calls_only_that_provider(routed_gateway, upstream, sdk, stream):
    client = sdk(routed_gateway)
    raw = client.chat.completions.with_raw_response.create(model="y/shared", messages=HELLO, stream=stream)
    assert raw.headers["x-modelbroker-provider"] == "y/shared"
    assert raw.headers["x-modelbroker-attempts"] == "1"
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        text = raw.parse().choices[0].message.content
    assert text == fake_reply("shared")
    assert called_paths(upstream) == ["y"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_pinned_by_model_name_falls_back_among_matching_providers_only(routed_gateway, upstream, sdk, stream):
    upstream.set_behavior("shared", {"kind": "status", "status": 500, "times": 1})
    upstream.set_behavior("other", {"kind": "status", "status": 500})
    rid = new_id()
    raw = sdk(routed_gateway).chat.completions.with_raw_response.create(
        model="shared", messages=HELLO, stream=stream, extra_headers={"x-request-id": rid})
    assert raw.headers["x-modelbroker-provider"] == "y/shared"
    assert raw.headers["x-modelbroker-attempts"] == "2"
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == fake_reply("shared")
    else:
        assert raw.parse().choices[0].message.content == fake_reply("shared")
    assert called_paths(upstream) == ["x", "y"]
    lines = for_request(routed_gateway.log_lines(), rid)
    assert [(l["provider_id"], l["success"], l.get("error_kind")) for l in lines] == [
        ("x/shared", False, "status"), ("y/shared", True, None)]


def test_pinned_by_provider_name(routed_gateway, upstream, sdk):
    upstream.set_behavior("g1", {"kind": "drop"})
    raw = sdk(routed_gateway).chat.completions.with_raw_response.create(model="groq", messages=HELLO)
    assert raw.headers["x-modelbroker-provider"] == "groq/g2"
    assert raw.parse().model == "g2"
    assert called_paths(upstream) == ["groq", "groq"]
    assert [r["json"]["model"] for r in upstream.requests] == ["g1", "g2"]


def test_pinned_model_all_failing_does_not_try_others(routed_gateway, upstream, sdk):
    upstream.set_behavior("shared", {"kind": "status", "status": 503})
    with pytest.raises(openai.InternalServerError) as caught:
        sdk(routed_gateway).chat.completions.create(model="shared", messages=HELLO)
    assert caught.value.status_code == 502
    assert [a["provider"] for a in caught.value.body["attempts"]] == ["x/shared", "y/shared"]
    assert called_paths(upstream) == ["x", "y"]


@pytest.mark.parametrize(("config_strategy", "model", "expected"), [
    ("priority", "auto", "pricey/pricey"),
    ("priority", "priority", "pricey/pricey"),
    ("priority", "cost", "cheap/cheap"),
    ("cost", "auto", "cheap/cheap"),
    ("cost", "priority", "pricey/pricey"),
])
def test_auto_and_strategy_names_route_over_all(start, provider, sdk, config_strategy, model, expected):
    gw = start(
        provider("cheap", priority=2, cost_per_1k_tokens=0.0001),
        provider("pricey", priority=1, cost_per_1k_tokens=0.01),
        strategy=config_strategy,
    )
    raw = sdk(gw).chat.completions.with_raw_response.create(model=model, messages=HELLO)
    assert raw.headers["x-modelbroker-provider"] == expected


def test_strategy_name_falls_back_over_all_providers(start, provider, upstream, sdk):
    gw = start(provider("cheap", priority=2, cost_per_1k_tokens=0.0001),
                                provider("pricey", priority=1, cost_per_1k_tokens=0.01))
    upstream.set_behavior("cheap", {"kind": "status", "status": 429})
    raw = sdk(gw).chat.completions.with_raw_response.create(model="cost", messages=HELLO)
    assert raw.headers["x-modelbroker-provider"] == "pricey/pricey"
    assert raw.headers["x-modelbroker-attempts"] == "2"


# --- /v1/models --------------------------------------------------------------------------------------


def test_models_lists_ids_models_auto_and_strategies(routed_gateway, sdk, installed_strategies):
    models = sdk(routed_gateway).models.list()
    ids = [m.id for m in models.data]
    for expected in ["z/other", "x/shared", "y/shared", "groq/g1", "groq/g2", "other", "shared", "g1", "g2",
                     "z", "x", "y", "groq", "auto", *installed_strategies]:
        assert expected in ids
    assert len(ids) == len(set(ids))
    assert all(m.object == "model" for m in models.data)
    owned = {m.id: m.owned_by for m in models.data}
    assert owned["x/shared"] == "x" and owned["g1"] == "groq" and owned["auto"] == "modelbroker"


def test_models_raw_shape(routed_gateway):
    body = httpx.get(routed_gateway.url + "/v1/models", timeout=5).json()
    assert body["object"] == "list"
    assert {"id", "object", "created", "owned_by"} <= set(body["data"][0])


def test_every_listed_model_is_accepted(routed_gateway, sdk):
    client = sdk(routed_gateway)
    for model in client.models.list().data:
        assert client.chat.completions.create(model=model.id, messages=HELLO).choices


# --- errors mapped to SDK exceptions ------------------------------------------------------------------


def assert_error_shape(body: dict, *, code: str | None = None, param: str | None = None) -> None:
    assert {"message", "type", "code", "param"} <= set(body)
    assert isinstance(body["message"], str) and body["message"]
    if code is not None:
        assert body["code"] == code
    if param is not None:
        assert body["param"] == param


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": HELLO, "temperature": 5}, "temperature"),
    ({"messages": HELLO, "top_p": 1.5}, "top_p"),
    ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ({"messages": HELLO, "max_completion_tokens": -1}, "max_completion_tokens"),
    ({"messages": HELLO, "model": ""}, "model"),
], ids=["messages-empty", "role-invalid", "temperature-5", "top_p", "max_tokens-0", "max_completion_tokens",
        "model-empty"])
def test_invalid_field_is_bad_request(shared, upstream, sdk, kwargs, param):
    gw = shared
    kwargs = {"model": "auto", **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gw).chat.completions.create(**kwargs)
    assert caught.value.status_code == 400
    assert_error_shape(caught.value.body, code="invalid_field", param=param)
    assert caught.value.body["type"] == "invalid_request_error"
    assert upstream.requests == []


@pytest.mark.parametrize(("content", "code"), [
    (b'{"model": "auto"}', "invalid_field"),  # messages missing
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "invalid_body"),
    (b"", "invalid_json"),
])
def test_bad_body_is_400_with_the_error_shape(shared, upstream, content, code):
    gw = shared
    r = httpx.post(gw.url + "/v1/chat/completions", content=content,
                   headers={"content-type": "application/json"}, timeout=5)
    assert r.status_code == 400
    assert_error_shape(r.json()["error"], code=code)
    assert upstream.requests == []


def test_messages_missing_names_the_field_through_the_sdk(shared, sdk):
    gw = shared
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gw).post("/chat/completions", body={"model": "auto"}, cast_to=object)
    assert caught.value.body["param"] == "messages"
    assert "required" in caught.value.body["message"]


def test_unknown_model_is_not_found_listing_what_exists(shared, upstream, sdk):
    gw = shared
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(gw).chat.completions.create(model="gpt-17", messages=HELLO)
    error = caught.value
    assert error.status_code == 404
    assert_error_shape(error.body, code="model_not_found", param="model")
    for name in ("gpt-17", "a/a", "b/m2", "alias", "m2", "real-model", "auto", "cost", "priority"):
        assert name in error.body["message"]
    assert upstream.requests == []


def test_unknown_model_while_streaming_is_not_found(shared, sdk):
    gw = shared
    with pytest.raises(openai.NotFoundError):
        sdk(gw).chat.completions.create(model="nope", messages=HELLO, stream=True)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_all_providers_failing_is_502_with_attempts(two_providers, upstream, sdk, stream):
    gw = two_providers()
    upstream.set_behavior("a", {"kind": "status", "status": 500})
    upstream.set_behavior("b", {"kind": "drop"})
    rid = new_id()
    with pytest.raises(openai.InternalServerError) as caught:
        sdk(gw).chat.completions.create(model="auto", messages=HELLO, stream=stream,
                                        extra_headers={"x-request-id": rid})
    error = caught.value
    assert error.status_code == 502
    assert_error_shape(error.body, code="all_providers_failed")
    attempts = error.body["attempts"]
    assert [(a["provider"], a["ok"], a["error"]) for a in attempts] == [
        ("a/a", False, "status"), ("b/b", False, "connection")]
    assert attempts[0]["status"] == 500
    assert_no_secret(error.response.text)
    lines = for_request(gw.log_lines(), rid)
    assert [(l["attempt"], l["success"], l["error_kind"]) for l in lines] == [
        (1, False, "status"), (2, False, "connection")]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_every_provider_rate_limiting_is_a_rate_limit_error(two_providers, upstream, sdk, stream):
    gw = two_providers()
    upstream.set_behavior("*", {"kind": "status", "status": 429})
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(gw).chat.completions.create(model="auto", messages=HELLO, stream=stream)
    assert caught.value.status_code == 429
    assert_error_shape(caught.value.body, code="rate_limited")
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert len(caught.value.body["attempts"]) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_deadline_passed_is_504(two_providers, upstream, sdk, stream):
    gw = two_providers()
    upstream.set_behavior("*", {"kind": "slow_first_byte", "delay_s": 3.0})  # "a" falls back to "b", as slow
    rid = new_id()
    began = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        sdk(gw).chat.completions.create(model="auto", messages=HELLO, stream=stream,
                                        extra_headers={"x-request-id": rid, "x-modelbroker-timeout": "0.4"})
    assert time.monotonic() - began < 2
    assert caught.value.status_code == 504
    assert_error_shape(caught.value.body, code="deadline_exceeded")
    assert [(l["provider_id"], l["error_kind"]) for l in for_request(gw.log_lines(), rid)] == [
        ("a/a", "timeout"), ("b/b", "timeout")]


@pytest.mark.parametrize("config", [
    {"providers": [{"name": "a", "endpoint": "http://127.0.0.1:9/v1/chat/completions", "model": "a",
                    "cost_per_1k_tokens": 0, "enabled": False}]},
    {"providers": [{"name": "a", "endpoint": "http://127.0.0.1:9/v1/chat/completions", "model": "a",
                    "cost_per_1k_tokens": 0, "api_key": "${MODELBROKER_TEST_UNSET_KEY_VAR}"}]},
    {"providers": []},
], ids=["disabled", "unset-key", "none"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_no_usable_provider_is_503(gateway, sdk, config, stream):
    gw = gateway(config)
    with pytest.raises(openai.InternalServerError) as caught:
        sdk(gw).chat.completions.create(model="auto", messages=HELLO, stream=stream)
    assert caught.value.status_code == 503
    assert_error_shape(caught.value.body, code="no_provider")


def test_pinned_to_a_disabled_provider_is_503(start, provider, sdk):
    gw = start(provider("a"), provider("off", enabled=False))
    with pytest.raises(openai.InternalServerError) as caught:
        sdk(gw).chat.completions.create(model="off/off", messages=HELLO)
    assert caught.value.status_code == 503
    assert "off/off" in caught.value.body["message"]


# --- the bugs found --------------------------------------------------------------------------------------


def test_stream_given_as_the_string_false_is_not_streamed(shared, provider):
    gw = shared
    r = httpx.post(gw.url + "/v1/chat/completions", timeout=5,
                   json={"model": "auto", "messages": HELLO, "stream": "false"})
    assert r.status_code == 400 or r.headers["content-type"].startswith("application/json")


def test_max_tokens_given_as_a_string_is_rejected_or_forwarded_as_an_integer(shared, upstream):
    gw = shared
    r = httpx.post(gw.url + "/v1/chat/completions", timeout=5,
                   json={"model": "auto", "messages": HELLO, "max_tokens": "5"})
    assert r.status_code == 400 or upstream.requests[-1]["json"]["max_tokens"] == 5
