"""Bad input gets a 4xx with a clear message, never a 500, and never reaches a provider:
the body limit (413), the content type (415), JSON that does not parse or is too deep,
invalid UTF-8, wrong types, a missing or empty prompt. Then a schemathesis run over the
gateway's own /openapi.json."""

from __future__ import annotations

import copy
import json

import httpx
import pytest
import yaml

from modelbroker.testing import GatewayServer

from ._support import config, health_row

MIB = 1024 * 1024
CHAT = "/v1/chat/completions"
ENDPOINTS = ["/generate", CHAT]
GOOD = {"/generate": {"prompt": "hi"}, CHAT: {"messages": [{"role": "user", "content": "hi"}]}}


def post(gw, path: str, content: bytes | str, content_type: str | None = "application/json", **kwargs):
    headers = {"content-type": content_type} if content_type else {}
    return gw.client.post(path, content=content, headers=headers, **kwargs)


def assert_error(answer: httpx.Response, status: int | tuple[int, ...], *words: str) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert answer.status_code in statuses, answer.text
    error = answer.json()["error"]
    assert error["message"] and error["type"]
    for word in words:
        assert word in error["message"], error["message"]
    return error


class Client:
    """A client of the module's gateway, shaped like conftest's RunningGateway."""

    def __init__(self, server: GatewayServer) -> None:
        self.url = server.url
        self.client = httpx.Client(base_url=server.url, timeout=10)

    def generate(self, body, **kwargs) -> httpx.Response:
        return self.client.post("/generate", json=body, **kwargs)

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)


@pytest.fixture(scope="module")
def shared_gateway(fake_upstream_server, tmp_path_factory):
    """One gateway for the tests that send it input it must refuse (each setting explicit,
    as the module scope starts it before the per-test environment cleanup)."""
    path = tmp_path_factory.mktemp("bad-input") / "providers.yaml"
    entry = {"name": "a", "endpoint": fake_upstream_server.chat_url, "model": "a", "cost_per_1k_tokens": 0.001}
    path.write_text(yaml.safe_dump(config(entry)), encoding="utf-8")
    server = GatewayServer(path, log_file="", max_body_bytes=MIB, disabled_plugins=[]).start()
    yield server
    server.stop()


@pytest.fixture
def gw(shared_gateway, upstream):
    client = Client(shared_gateway)
    yield client
    client.client.close()


@pytest.fixture
def own_gw(gateway, provider, upstream):
    """A gateway of the test's own, for tests that leave a mark on provider health."""
    return gateway(config(provider("a")), log=False)


# --- size ------------------------------------------------------------------------------------


def body_of_size(size: int) -> bytes:
    head, tail = b'{"prompt": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_one_mib_is_accepted_one_byte_more_is_413(gw, upstream):
    assert post(gw, "/generate", body_of_size(MIB)).status_code == 200
    error = assert_error(post(gw, "/generate", body_of_size(MIB + 1)), 413, "1048576 bytes",
                         "MODELBROKER_MAX_BODY_BYTES")
    assert error["code"] == "body_too_large"
    assert upstream.calls["a"] == 1


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_chunked_body_over_the_limit_is_413(gw, upstream, path):
    def chunks():
        for _ in range(20):
            yield b"x" * (64 * 1024)

    answer = gw.client.post(path, content=chunks(), headers={"content-type": "application/json"})
    assert_error(answer, 413, "MODELBROKER_MAX_BODY_BYTES")
    assert upstream.calls == {}


def test_the_limit_is_a_setting(gateway, provider, upstream, monkeypatch):
    monkeypatch.setenv("MODELBROKER_MAX_BODY_BYTES", "2000")
    gw = gateway(config(provider("a")), log=False)
    assert post(gw, "/generate", body_of_size(2000)).status_code == 200
    assert_error(post(gw, "/generate", body_of_size(2001)), 413, "2000 bytes")


# --- content type -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_body_that_is_not_json_is_415(gw, upstream, path, content_type):
    error = assert_error(post(gw, path, json.dumps(GOOD[path]), content_type), 415, "Content-Type: application/json",
                         content_type)
    assert error["code"] == "unsupported_media_type"
    assert upstream.calls == {}


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.api+json",
                                          "APPLICATION/JSON", None])
def test_json_content_types_are_accepted(gw, content_type):
    assert post(gw, "/generate", json.dumps(GOOD["/generate"]), content_type).status_code == 200


# --- JSON that does not parse -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("content", [b"{", b"", b"{'prompt': 'hi'}", b'{"prompt": "hi"} trailing', b"NaN"],
                         ids=["truncated", "empty", "single-quotes", "trailing", "nan"])
def test_malformed_json_is_400(gw, upstream, path, content):
    error = assert_error(post(gw, path, content), 400, "not valid JSON")
    assert error["code"] == "invalid_json"
    assert upstream.calls == {}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_invalid_utf8_is_400(gw, upstream, path):
    assert_error(post(gw, path, b'{"prompt": "\xff\xfe hi", "messages": []}'), 400, "not valid JSON")
    assert upstream.calls == {}


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("depth", [2_000, 200_000])
def test_very_deep_nesting_is_400(gw, upstream, path, depth):
    content = '{"prompt": "hi", "messages": [], "x": ' + "[" * depth + "]" * depth + "}"
    assert_error(post(gw, path, content), 400, "not valid JSON")
    assert upstream.calls == {}


def test_nesting_too_deep_to_forward_is_a_4xx_and_no_provider_failure(own_gw, upstream):
    content = json.dumps(GOOD[CHAT])[:-1] + ', "metadata": ' + "[" * 300 + "]" * 300 + "}"
    answer = post(own_gw, CHAT, content)
    assert health_row(own_gw, "a/a")["consecutive_failures"] == 0
    assert_error(answer, (400, 422))


def test_a_max_tokens_too_large_to_forward_is_a_4xx(gw, upstream):
    answer = post(gw, "/generate", '{"prompt": "hi", "max_tokens": 100000000000000000000000}')
    assert_error(answer, 422, "max_tokens")
    assert upstream.calls == {}


# --- wrong shapes and types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, ("prompt: is required",)),
        ({"prompt": ""}, ("prompt: must not be empty",)),
        ({"prompt": 5}, ("prompt: must be a string",)),
        ({"prompt": None}, ("prompt",)),
        ({"prompt": ["hi"]}, ("prompt: must be a string",)),
        ({"prompt": "hi", "max_tokens": "many"}, ("max_tokens: must be an integer",)),
        ({"prompt": "hi", "max_tokens": 0}, ("max_tokens: must be > 0",)),
        ({"prompt": "hi", "temperature": 9}, ("temperature: must be <= 2",)),
        ({"prompt": "hi", "stream": "yes please"}, ("stream: must be true or false",)),
        ({"prompt": "hi", "promt": "typo"}, ("promt: unknown field",)),
    ],
)
def test_generate_names_the_field(gw, upstream, body, words):
    error = assert_error(gw.generate(body), 422, *words)
    assert error["code"] == "invalid_field"
    assert upstream.calls == {}


@pytest.mark.parametrize("body", [[1, 2], 5, None, "hello", True])
def test_generate_body_that_is_no_object_is_400(gw, upstream, body):
    assert_error(post(gw, "/generate", json.dumps(body)), 400)
    assert upstream.calls == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "hi"}], "model": ""}, "model"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "stream": [1]}, "stream"),
    ],
)
def test_chat_names_the_field(gw, upstream, body, field):
    error = assert_error(gw.client.post(CHAT, json=body), 400, field)
    assert error["param"] == field or error["param"].startswith(field)
    assert upstream.calls == {}


@pytest.mark.parametrize("body", [[1, 2], 5, "hello"])
def test_chat_body_that_is_no_object_is_400(gw, upstream, body):
    assert_error(post(gw, CHAT, json.dumps(body)), 400, "JSON object")


@pytest.mark.parametrize("strategy", ["slo", "cost"])
def test_a_content_part_with_a_non_string_text_is_no_500(own_gw, upstream, strategy):
    body = {"model": strategy, "messages": [{"role": "user", "content": [{"type": "text", "text": 123}]}]}
    assert own_gw.client.post(CHAT, json=body).status_code != 500


def test_no_bad_input_ever_reaches_a_provider_or_its_health(own_gw, upstream):
    for content in (b"{", b"[]", b'{"prompt": ""}', b'{"prompt": 1}', b"\xff", b"[" * 5000):
        post(own_gw, "/generate", content)
        post(own_gw, CHAT, content)
    assert upstream.calls == {}
    row = health_row(own_gw, "a/a")
    assert row["state"] == "healthy" and row["recent_requests"] == 0


# --- schemathesis over the gateway's own OpenAPI schema -------------------------------------------------

#: Examples per operation and generation mode: enough to cover every field, fast enough for every run.
EXAMPLES = 40
#: 5xx the gateway documents: 502 (every provider failed), 503 (no provider), 504 (deadline).
DOCUMENTED_5XX = {502, 503, 504}


def broken_refs(schema: dict) -> list[str]:
    """Every ``$ref`` in ``schema`` that does not resolve inside the document."""
    found = []

    def resolves(ref: str) -> bool:
        node = schema
        for part in ref.removeprefix("#/").split("/"):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    def walk(node) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/") and not resolves(ref):
                found.append(ref)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return found


def hoist_local_defs(schema: dict) -> dict:
    """The schema with each request body's pydantic ``$defs`` moved to components/schemas.

    The gateway embeds ``Model.model_json_schema()`` as request bodies, whose refs point
    at ``#/$defs/...`` inside the embedded schema; in the whole document they must point
    at ``#/components/schemas/...`` (see test_the_published_schema_has_no_broken_refs).
    """
    schema = copy.deepcopy(schema)
    components = schema.setdefault("components", {}).setdefault("schemas", {})

    def walk(node) -> None:
        if isinstance(node, dict):
            for name, definition in (node.pop("$defs", None) or {}).items():
                components.setdefault(name, definition)
                walk(definition)
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                    node[key] = "#/components/schemas/" + value.removeprefix("#/$defs/")
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema["paths"])
    return schema


def test_the_published_schema_has_no_broken_refs(gw):
    assert broken_refs(gw.get("/openapi.json").json()) == []


def test_the_published_chat_schema_says_what_the_check_enforces(gw):
    """The chat body is checked as a TypedDict: its schema still gives the defaults, the bounds,
    the one required field, and that other fields pass."""
    operation = gw.get("/openapi.json").json()["paths"][CHAT]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    fields = schema["properties"]
    assert schema["required"] == ["messages"]
    assert schema["additionalProperties"] is True
    assert fields["model"]["default"] == "auto" and fields["model"]["minLength"] == 1
    assert fields["stream"]["anyOf"][0] == {"type": "boolean", "default": False}
    assert {"type": "null"} in fields["stream"]["anyOf"]  # nullable, as in OpenAI's schema
    assert fields["messages"]["minItems"] == 1
    assert fields["messages"]["items"]["required"] == ["role"]
    assert "user" in fields["messages"]["items"]["properties"]["role"]["enum"]
    assert {("maximum", 2), ("minimum", 0)} <= fields["temperature"]["anyOf"][0].items()


def test_every_error_answered_is_documented_with_its_shape(own_gw, upstream):
    """An error status a route answers is listed for that route in /openapi.json, with the
    error shape, and the body answered matches that shape."""
    from modelbroker._server.responses import ErrorBody

    documented = {(path, method.upper()): operation["responses"]
                  for path, operations in own_gw.get("/openapi.json").json()["paths"].items()
                  for method, operation in operations.items()}
    client, json_type = own_gw.client, {"content-type": "application/json"}
    answers = {
        400: client.post(CHAT, content=b"{", headers=json_type),
        404: client.post(CHAT, json={**GOOD[CHAT], "model": "no-such-model"}),
        413: client.post(CHAT, content=b"x" * (20 * MIB + 1), headers=json_type),  # over the default limit
        415: client.post(CHAT, content=b"{}", headers={"content-type": "text/plain"}),
        422: client.post("/generate", json={"prompt": ""}),
        (400, "/usage"): client.get("/usage", params={"to": "someday"}),
    }
    upstream.set_behavior("a", {"kind": "status", "status": 500})
    answers[502] = client.post(CHAT, json=GOOD[CHAT])
    for key, answer in answers.items():
        status, path = key if isinstance(key, tuple) else (key, answer.request.url.path)
        assert answer.status_code == status, (key, answer.text)
        responses = documented[(path, answer.request.method)]
        assert responses[str(status)]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"}, (key, responses.get(str(status)))
        ErrorBody.model_validate(answer.json())
    assert answers[502].json()["error"]["attempts"][0]["provider"] == "a/a"


def test_schemathesis_finds_no_server_error(gateway, provider, upstream):
    schemathesis = pytest.importorskip("schemathesis")
    hypothesis = pytest.importorskip("hypothesis")
    requests = pytest.importorskip("requests")

    gw = gateway(config(provider("a"), retries=0), log=False)
    raw = hoist_local_defs(gw.get("/openapi.json").json())
    assert broken_refs(raw) == []
    schema = schemathesis.openapi.from_dict(raw)
    modes = schemathesis.GenerationMode
    seen: dict[tuple[str, int], int] = {}
    server_errors: list[str] = []
    session = requests.Session()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /generate", "POST /v1/chat/completions", "GET /health"}

    for operation in operations:
        with_body = operation.method.upper() == "POST" and operation.path != "/admin/reload"
        for mode in (modes.POSITIVE, modes.NEGATIVE) if with_body else (modes.POSITIVE,):

            @hypothesis.given(case=operation.as_strategy(mode))
            @hypothesis.settings(max_examples=EXAMPLES if with_body else 3, deadline=None, database=None,
                                 derandomize=True, suppress_health_check=list(hypothesis.HealthCheck))
            def check(case) -> None:
                answer = case.call(base_url=gw.url, session=session, timeout=10)
                key = (operation.label, answer.status_code)
                seen[key] = seen.get(key, 0) + 1
                if answer.status_code == 500 or (answer.status_code >= 500
                                                 and answer.status_code not in DOCUMENTED_5XX):
                    server_errors.append(f"{operation.label} {answer.status_code} {case.body!r:.200} -> "
                                         f"{answer.text[:200]}")

            check()

    session.close()
    assert not server_errors, "\n".join(server_errors[:10])
    assert seen.get(("POST /generate", 200)), seen
    assert seen.get(("POST /v1/chat/completions", 200)), seen
    assert any(status >= 400 for (label, status) in seen if label == "POST /v1/chat/completions"), seen
