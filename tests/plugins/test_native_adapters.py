"""plugins/anthropic/ and plugins/gemini/: what both native adapters must do alike.

Each test runs once per adapter (ids ``anthropic`` / ``gemini``), against the fake upstream's own endpoint for
that API with the gateway's own client (``modelbroker._upstream.client.UpstreamHTTP``), or through a real gateway with the official
``openai`` client. What differs between the two (URLs, status and error codes, request shapes) is in ``Native``;
the tests of one adapter's conversions and request shapes stay in test_anthropic.py and test_gemini.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import openai
import pytest

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.types import ChatRequest, ErrorKind, ProviderError
from modelbroker._upstream.client import UpstreamHTTP
from modelbroker.plugins import anthropic, gemini
from modelbroker.testing import registered

PROMPT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello big world"}]


@dataclass(frozen=True)
class Native:
    """One native adapter as the tests below see it."""

    plugin: ModuleType
    type: str  # the provider type, the only one the plugin registers
    name: str  # the provider's name in the config and the log
    model: str
    secret: str
    key_header: str
    no_key: tuple[int, str]  # status and code when the request carries no key
    no_key_says: tuple[str, ...]  # what the message for it must hold
    overloaded: tuple[int, str]  # a status the upstream answers, and the code read from its body
    leak: dict[str, Any]  # an upstream error that names the key; with no other provider the gateway answers 502
    generate: dict[str, Any]  # /generate fields beyond prompt and max_tokens=20 ...
    generate_sent: tuple[str, Any]  # ... and the field of the upstream body they must give
    complete_failures: list[tuple[str, str, ErrorKind]]  # (id, behavior, kind)
    stream_failures: list[tuple[str, dict, ErrorKind]]  # (id, behavior, kind)
    fallbacks: list[tuple[str, dict, int | None]]  # (id, behavior, logged status)


STREAM_FAILURES = [
    ("stream_cut", {"kind": "stream_cut", "cut_after": 2}, ErrorKind.CONNECTION),
    ("stream_error_event", {"kind": "stream_error_event", "cut_after": 2}, ErrorKind.ERROR_EVENT),
    ("stream_stall", {"kind": "stream_stall", "cut_after": 1}, ErrorKind.TIMEOUT),
    ("malformed", {"kind": "malformed"}, ErrorKind.MALFORMED),
]

ANTHROPIC = Native(
    plugin=anthropic, type="anthropic", name="claude", model="claude-t",
    secret="sk-ant-adapter-test-SECRET-0123456789abcdef", key_header="x-api-key",
    no_key=(401, "authentication_error"), no_key_says=("x-api-key header is required",),
    overloaded=(529, "overloaded_error"),
    leak={"kind": "status", "status": 401, "body": {"type": "error", "error": {
        "type": "authentication_error", "message": "invalid x-api-key: sk-ant-adapter-test-SECRET-0123456789abcdef"}}},
    generate={}, generate_sent=("max_tokens", 20),
    complete_failures=[("malformed", "malformed", ErrorKind.MALFORMED)],
    stream_failures=STREAM_FAILURES,
    fallbacks=[
        ("429", {"kind": "status", "status": 429, "headers": {"retry-after": "1"}}, 429),
        ("500", {"kind": "status", "status": 500}, 500),
        ("529", {"kind": "status", "status": 529}, 529),
        ("malformed", {"kind": "malformed"}, None),
    ],
)

GEMINI = Native(
    plugin=gemini, type="gemini", name="gem", model="gem-t",
    secret="AIza-gemini-adapter-test-SECRET-0123456789", key_header="x-goog-api-key",
    no_key=(403, "PERMISSION_DENIED"), no_key_says=(),
    overloaded=(503, "UNAVAILABLE"),
    # Google answers a bad key 400 INVALID_ARGUMENT, which only its reason tells from the client's fault.
    leak={"kind": "status", "status": 400, "body": {"error": {
        "code": 400, "status": "INVALID_ARGUMENT",
        "message": "API key not valid. Please pass a valid API key: AIza-gemini-adapter-test-SECRET-0123456789",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}},
    generate={"temperature": 0.5}, generate_sent=("generationConfig", {"maxOutputTokens": 20, "temperature": 0.5}),
    complete_failures=[("malformed", "malformed", ErrorKind.MALFORMED),
                       ("empty_choices", "empty_choices", ErrorKind.STATUS)],
    stream_failures=[*STREAM_FAILURES, ("empty_choices", {"kind": "empty_choices"}, ErrorKind.STATUS)],
    fallbacks=[
        ("429", {"kind": "status", "status": 429}, 429),
        ("500", {"kind": "status", "status": 500}, 500),
        ("malformed", {"kind": "malformed"}, None),
        ("empty_choices", {"kind": "empty_choices"}, 400),
    ],
)

ADAPTERS = [ANTHROPIC, GEMINI]


@pytest.fixture(params=ADAPTERS, ids=[a.type for a in ADAPTERS])
def adapter(request) -> Native:
    return request.param


def cases(field: str) -> list:
    """``adapter`` plus each of its (behavior, expected) cases in ``field``, with ids like ``gemini-malformed``."""
    return [pytest.param(a, *case, id=f"{a.type}-{label}") for a in ADAPTERS for label, *case in getattr(a, field)]


def chat_request(**fields) -> ChatRequest:
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return ChatRequest(**fields)


def reply(adapter: Native) -> str:
    return f"Fake reply from {adapter.model}: hello big world"


def test_registers_its_type(adapter):
    (factory,) = registered(adapter.plugin, "register_adapters").values()
    assert list(registered(adapter.plugin, "register_adapters")) == [adapter.type]
    assert callable(factory().call_provider)


# --- against the fake upstream -----------------------------------------------------------------------


def config(upstream, adapter: Native, **fields) -> ProviderConfig:
    fields.setdefault("api_key", adapter.secret)
    return ProviderConfig(name=adapter.name, type=adapter.type, endpoint=upstream.endpoint(adapter.type),
                          model=adapter.model, cost_per_1k_tokens=0.0, **fields)


async def test_complete_without_key_is_refused(upstream, adapter):
    async with UpstreamHTTP() as client:
        with pytest.raises(ProviderError) as caught:
            await adapter.plugin.complete(config(upstream, adapter, api_key=None), chat_request(), client)
    status, code = adapter.no_key
    assert caught.value.status == status and caught.value.code == code
    for text in adapter.no_key_says:
        assert text in caught.value.message


@pytest.mark.parametrize("adapter, behavior, kind", cases("complete_failures"))
async def test_complete_malformed_or_blocked(upstream, adapter, behavior, kind):
    upstream.set_behavior(adapter.model, behavior)
    async with UpstreamHTTP() as client:
        with pytest.raises(ProviderError) as caught:
            await adapter.plugin.complete(config(upstream, adapter), chat_request(), client)
    assert caught.value.kind is kind


@pytest.mark.parametrize("adapter, behavior, kind", cases("stream_failures"))
async def test_open_stream_failures(upstream, adapter, behavior, kind):
    upstream.set_behavior(adapter.model, behavior)
    got = []
    async with UpstreamHTTP() as client:
        with pytest.raises(ProviderError) as caught:
            stream = await adapter.plugin.open_stream(config(upstream, adapter, timeout_s=0.3),
                                                      chat_request(stream=True), client)
            async for chunk in stream:
                got.append(chunk)
    assert caught.value.kind is kind
    if behavior["kind"] in ("stream_cut", "stream_error_event"):
        assert sum(1 for c in got if c.has_content) == 2


async def test_open_stream_status_raises_before_any_chunk(upstream, adapter):
    status, code = adapter.overloaded
    upstream.set_behavior(adapter.model, {"kind": "status", "status": status})
    async with UpstreamHTTP() as client:
        with pytest.raises(ProviderError) as caught:
            await adapter.plugin.open_stream(config(upstream, adapter), chat_request(stream=True), client)
    assert caught.value.status == status and caught.value.code == code


# --- through the gateway -------------------------------------------------------------------------------


@pytest.fixture
def native_gateway(adapter, gateway, provider, upstream):
    """``native_gateway(*extra_providers, **adapter_fields)``: a gateway whose first provider is the
    adapter on the fake upstream; retries off so fallbacks are immediate."""

    def start(*extra: dict, **fields):
        fields = {"api_key": adapter.secret, **fields}
        entry = provider(adapter.name, model=adapter.model, type=adapter.type,
                         endpoint=upstream.endpoint(adapter.type), priority=1, **fields)
        if entry["api_key"] is None:
            del entry["api_key"]
        return gateway({"providers": [entry, *extra], "reliability": {"retries": 0}})

    return start


def test_generate_through_the_gateway(native_gateway, upstream, adapter):
    gw = native_gateway()
    r = gw.generate({"prompt": "hello big world", "max_tokens": 20, **adapter.generate})
    assert r.status_code == 200
    body = r.json()
    assert body["response"] == reply(adapter)
    assert body["provider"] == f"{adapter.name}/{adapter.model}" and body["tokens"] == 10
    field, value = adapter.generate_sent
    assert upstream.requests[-1]["json"][field] == value
    line = gw.log_lines()[0]
    assert line["success"] is True and (line["prompt_tokens"], line["completion_tokens"]) == (3, 7)
    assert "tokens_estimated" not in line


def test_chat_completions_stream_with_usage(native_gateway, upstream, adapter):
    upstream.set_behavior(adapter.model, {"chunks": 4})
    gw = native_gateway()
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", timeout=10, max_retries=0)
    stream = oa.chat.completions.create(model="auto", messages=PROMPT, stream=True,
                                        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply(adapter)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 4
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.prompt_tokens == 5 and chunks[-1].usage.completion_tokens == 7
    line = gw.log_lines()[0]
    assert line["success"] is True and line["total_tokens"] == 12 and "tokens_estimated" not in line


@pytest.mark.parametrize("adapter, behavior, status", cases("fallbacks"))
def test_failures_fall_back_to_the_next_provider(native_gateway, provider, upstream, adapter, behavior, status):
    upstream.set_behavior(adapter.model, behavior)
    gw = native_gateway(provider("backup", priority=2))
    r = gw.generate({"prompt": "hi"})
    assert r.status_code == 200 and r.json()["provider"] == "backup/backup" and r.json()["attempts"] == 2
    first, second = gw.log_lines()
    assert first["provider"] == adapter.name and first["success"] is False and first["status"] == status
    assert second["provider"] == "backup" and second["success"] is True


def test_missing_key_is_refused_and_falls_back(native_gateway, provider, upstream, adapter):
    gw = native_gateway(provider("backup", priority=2), api_key=None)
    r = gw.generate({"prompt": "hi"})
    assert r.status_code == 200 and r.json()["provider"] == "backup/backup"
    assert adapter.key_header not in upstream.requests[0]["headers"]
    assert gw.log_lines()[0]["status"] == adapter.no_key[0]


def test_the_key_never_reaches_responses_or_the_log(native_gateway, upstream, adapter):
    upstream.set_behavior(adapter.model, adapter.leak)
    gw = native_gateway()
    r = gw.generate({"prompt": "hi"})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "all_providers_failed"
    assert adapter.secret not in r.text and adapter.secret[:12] not in r.text
    gw.stop()
    log = gw.log_file.read_text()
    assert adapter.name in log and adapter.secret not in log and adapter.secret[:12] not in log
