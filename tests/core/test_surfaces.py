"""Surfaces: a plugin's own API over the router (``register_surfaces``), and what the core
does for every surface: errors in the surface's shape, records naming it, aliases and
trailing slashes, x-request-id everywhere, 404 before 415, GET /v1/models/{id}, CORS."""

from __future__ import annotations

import contextlib
import json

import pytest

from modelbroker import APIError, ChatRequest, ConfigError, StreamEnd, hookimpl, json_object, sse_event
from modelbroker._config.settings import Settings
from modelbroker._routing.gateway import Gateway


class EchoSurface:
    """POST /v1/echo: {"text": ...} in, {"answer": ...} out; errors as {"problem": ...}."""

    paths = ("/v1/echo", "/echo")

    def parse(self, body, incoming):
        data = json_object(body, "an echo request")
        if not isinstance(data.get("text"), str):
            raise APIError(400, "text: must be a string", param="text")
        return ChatRequest(messages=[{"role": "user", "content": data["text"]}], model=data.get("model"),
                           stream=bool(data.get("stream")), client=incoming.header("x-echo-client"))

    async def answer(self, request, routed):  # an async answer is awaited
        return {"answer": routed.completion.text, "provider": routed.provider.id, "surface": request.surface}

    async def stream(self, request, routed):
        async with contextlib.aclosing(routed.relay()) as items:
            async for item in items:
                if isinstance(item, StreamEnd):
                    yield sse_event({"end": item.error is None}, event="end")
                    return
                if item.text:
                    yield sse_event({"delta": item.text})

    def error(self, error):
        return {"problem": error.message, "status": error.status, "code": error.code}


class EchoPlugin:
    @hookimpl
    def register_surfaces(self, register):
        register("echo", EchoSurface)


def events(text: str) -> list[dict]:
    import json

    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def test_hook_register_surfaces(gateway, provider, upstream):
    """A plugin's surface answers its paths in its format, fails over as chat does, names
    itself in app.log, and answers errors in its shape."""
    upstream.set_behavior("down", {"kind": "status", "status": 503})
    gw = gateway({"reliability": {"retries": 0}, "providers": [provider("down", priority=1), provider("up", priority=2)]},
                 plugins={"echo": EchoPlugin()})
    answer = gw.post("/v1/echo", json={"text": "hello there"}, headers={"x-echo-client": "tester"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"answer": "Fake reply from up: hello there", "provider": "up/up", "surface": "echo"}
    assert answer.headers["x-modelbroker-provider"] == "up/up"
    assert answer.headers["x-modelbroker-attempts"] == "2"
    assert answer.headers["x-request-id"]

    streamed = gw.post("/echo", json={"text": "streamed words", "stream": True})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    got = events(streamed.text)
    assert "".join(e.get("delta", "") for e in got) == "Fake reply from up: streamed words"
    assert got[-1] == {"end": True}

    bad = gw.post("/v1/echo", json={"text": 5})
    assert bad.status_code == 400
    assert bad.json() == {"problem": "text: must be a string", "status": 400, "code": None}
    unknown = gw.post("/v1/echo", json={"text": "x", "model": "nope"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "model_not_found"
    not_json = gw.post("/v1/echo", content=b"text", headers={"content-type": "text/plain"})
    assert not_json.status_code == 415 and set(not_json.json()) == {"problem", "status", "code"}

    lines = gw.log_lines()
    tried = [line for line in lines if line["attempt"] > 0]
    assert {line["surface"] for line in tried} == {"echo"}
    assert [(line["provider_id"], line["success"]) for line in tried[:2]] == [("down/down", False), ("up/up", True)]


class MadeJSONSurface(EchoSurface):
    """Answers with JSON it made itself (bytes), which the core sends as they are."""

    paths = ("/v1/made",)

    def answer(self, request, routed):
        return b'{"made": %b}' % json.dumps(routed.completion.text).encode()


class MadeJSONPlugin:
    @hookimpl
    def register_surfaces(self, register):
        register("made", MadeJSONSurface)


def test_a_surface_may_answer_json_it_made_as_bytes(gateway, provider):
    gw = gateway({"providers": [provider("up")]}, plugins={"made": MadeJSONPlugin()})
    answer = gw.post("/v1/made", json={"text": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.content == b'{"made": "Fake reply from up: hi"}'
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["content-length"] == str(len(answer.content))
    assert answer.headers["x-modelbroker-provider"] == "up/up" and answer.headers["x-request-id"]
    assert float(answer.headers["x-modelbroker-cost"]) >= 0


class Claims:
    def __init__(self, name, paths, **methods):
        self.name, self.paths, self.methods = name, paths, methods

    @hookimpl
    def register_surfaces(self, register):
        paths, methods = self.paths, self.methods

        class Made(EchoSurface):
            pass

        Made.paths = paths
        for method, value in methods.items():
            setattr(Made, method, value)
        register(self.name, Made)


@pytest.mark.parametrize("plugins, says", [
    ({"one": Claims("one", ("/v1/same",)), "two": Claims("two", ("/v1/same",))},
     "path '/v1/same' is claimed by two surfaces: plugin 'two' (registered in code), surface 'two' and plugin "
     "'one' (registered in code), surface 'one'; uninstall or disable one of the plugins"),
    ({"mine": Claims("mine", ("/v1/models",))}, "path '/v1/models' is the gateway's own"),
    ({"mine": Claims("mine", "/v1/x")}, "paths must be a list of paths"),
    ({"mine": Claims("mine", ("v1/x",))}, "'v1/x' is not a path"),
    ({"mine": Claims("mine", ("/v1/x",), stream=None)}, "which has no stream method"),
    ({"mine": Claims("chat", ("/v1/x",))}, "surface 'chat' is registered twice"),
], ids=["path-twice", "core-path", "paths-a-string", "not-a-path", "no-stream", "name-twice"])
def test_a_surface_that_cannot_be_mounted_stops_the_gateway(write_config, plugins, says):
    config = write_config("providers:\n  - {name: a, endpoint: 'http://127.0.0.1:9/v1/chat/completions', "
                          "model: a, cost_per_1k_tokens: 0}\n")
    with pytest.raises(ConfigError) as caught:
        Gateway.from_settings(Settings(config=config, log_file=""), plugins=plugins)
    assert says in str(caught.value)


# --- what the core does for every surface ---------------------------------------------------


@pytest.fixture
def gw(gateway, provider):
    return gateway({"providers": [provider("a"), provider("b", model="vendor/b-model")]}, log=False)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/chat/completions/", "/chat/completions",
                                  "/chat/completions/"])
def test_chat_is_answered_without_v1_and_with_a_trailing_slash(gw, path):
    answer = gw.post(path, json={"messages": [{"role": "user", "content": "hi"}]}, follow_redirects=False)
    assert answer.status_code == 200, answer.text
    assert answer.json()["object"] == "chat.completion"


@pytest.mark.parametrize("path", ["/v1/models", "/models", "/health", "/v1/models/a/a", "/nowhere", "/openapi.json"])
def test_every_response_has_a_request_id(gw, path):
    answer = gw.get(path)
    assert len(answer.headers.get_list("x-request-id")) == 1, (path, answer.status_code)
    asked = gw.get(path, headers={"x-request-id": "mine-123"})
    assert asked.headers["x-request-id"] == "mine-123"


def test_a_body_that_is_not_json_is_404_on_a_path_nobody_answers_and_415_on_a_surface(gw):
    files = {"file": ("a.txt", b"hello", "text/plain")}
    assert gw.post("/v1/files", files=files).status_code == 404
    refused = gw.post("/v1/chat/completions", files=files)
    assert refused.status_code == 415 and refused.json()["error"]["code"] == "unsupported_media_type"


def test_a_model_is_retrieved_by_its_id(gw):
    import openai

    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)
    listed = [model.id for model in client.models.list()]
    assert {"a/a", "vendor/b-model", "auto", "priority"} <= set(listed)
    assert client.models.retrieve("vendor/b-model").id == "vendor/b-model"
    assert client.models.retrieve("b/vendor/b-model").owned_by == "b"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.body["code"] == "model_not_found"


def test_stream_null_is_accepted_and_every_choice_has_refusal_and_logprobs(gateway, provider):
    gw = gateway({"providers": [provider("claude", type="anthropic")]}, log=False)
    answer = gw.chat("hi", stream=None, n=None, seed=None, stop=None)
    assert answer.status_code == 200, answer.text
    [choice] = answer.json()["choices"]
    assert choice["logprobs"] is None and choice["message"]["refusal"] is None


# --- CORS ------------------------------------------------------------------------------------


ORIGIN = "https://app.example.com"


@pytest.fixture
def cors_gw(gateway, provider):
    return gateway({"providers": [provider("a")]}, log=False, cors_origins=[ORIGIN])


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/generate", "/v1/models"])
def test_cors_preflights_are_answered_on_every_route(cors_gw, path):
    answer = cors_gw.client.options(path, headers={"origin": ORIGIN, "access-control-request-method": "POST",
                                                   "access-control-request-headers": "authorization, content-type"})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "authorization" in answer.headers["access-control-allow-headers"].lower()


def test_cors_headers_are_on_the_direct_routes_and_errors_too(cors_gw):
    ok = cors_gw.client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                             headers={"origin": ORIGIN})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in ok.headers["access-control-expose-headers"]
    bad = cors_gw.client.post("/v1/chat/completions", json={}, headers={"origin": ORIGIN})
    assert bad.status_code == 400 and bad.headers["access-control-allow-origin"] == ORIGIN
    other = cors_gw.client.post("/generate", json={"prompt": "hi"}, headers={"origin": "https://evil.example"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers


def test_without_cors_origins_there_are_no_cors_headers(gw):
    answer = gw.client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                            headers={"origin": ORIGIN})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
    preflight = gw.client.options("/v1/chat/completions",
                                  headers={"origin": ORIGIN, "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_the_routing_headers_replace_a_surfaces_own_and_are_added_once():
    """A surface's own Response gets the routing headers appended; one it set itself under
    the same name is replaced, not sent twice."""
    from starlette.responses import Response

    from modelbroker._server.surfaces import add_headers

    answer = Response(b"{}", media_type="application/json", headers={"X-Request-Id": "the surface's"})
    add_headers(answer, {"x-request-id": "req_1", "x-modelbroker-provider": "a", "x-modelbroker-attempts": "1"})
    assert answer.headers.getlist("x-request-id") == ["req_1"]
    assert answer.headers["x-modelbroker-provider"] == "a" and answer.headers["content-type"] == "application/json"
    assert [name for name, _ in answer.raw_headers].count(b"x-modelbroker-attempts") == 1
