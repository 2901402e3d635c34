"""The gateway's answers in OpenAI's formats hold to OpenAI's own published schema.

The SDKs are lenient (a missing field becomes None), so a test through them would not see
an answer a strict client refuses. Here each raw body, and every streamed chunk or event, is
checked against the component of OpenAI's OpenAPI spec it claims to be (tests/openai_schema.py,
tests/schemas/README.md), through providers of every built-in type, behind a real gateway.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points

import pytest
from jsonschema import Draft202012Validator
from openai_schema import assert_valid, errors, prepared_schemas

from modelbroker.testing import registered

PROVIDER_TYPES = ("openai", "anthropic", "gemini")
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                                 "parameters": {"type": "object", "properties": {
                                                     "city": {"type": "string"}}}}}
HELLO = [{"role": "user", "content": "hello schema"}]

COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "m", "choices": [
    {"index": 0, "finish_reason": "stop", "logprobs": None,
     "message": {"role": "assistant", "content": "hi", "refusal": None}}]}
CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}


def data_events(text: str) -> list[dict]:
    """The JSON of every ``data:`` line of a server-sent event stream, ``[DONE]`` left out."""
    lines = (line[len("data:"):].strip() for line in text.splitlines() if line.startswith("data:"))
    return [json.loads(data) for data in lines if data != "[DONE]"]


def surface_paths() -> set[str]:
    """The POST paths the installed surfaces claim: any other path the gateway answers 404."""
    paths: set[str] = set()
    for entry in entry_points(group="modelbroker"):
        try:
            plugin = entry.load()
        except Exception:  # noqa: BLE001 - a plugin mid-edit claims nothing yet
            continue
        if hasattr(plugin, "register_surfaces"):
            for factory in registered(plugin, "register_surfaces").values():
                paths.update(getattr(factory, "paths", ()))
    return paths


ANSWERED = surface_paths()


def unless_answered(path: str):
    return pytest.mark.skipif(path not in ANSWERED, reason=f"no installed surface answers {path} yet")


# --- the helper fails, readably ------------------------------------------------------------


def test_the_prepared_schemas_are_json_schema_2020_12():
    """What the helper made of OpenAPI's dialect is itself valid JSON Schema, for every component."""
    schemas = prepared_schemas()
    assert {"CreateChatCompletionResponse", "ResponseStreamEvent", "ErrorResponse", "Model"} <= set(schemas)
    for name, schema in schemas.items():
        Draft202012Validator.check_schema(schema)
        assert "nullable" not in json.dumps(schema), name


def test_a_valid_completion_and_chunk_pass():
    assert_valid(COMPLETION, "CreateChatCompletionResponse")
    assert_valid(CHUNK, "CreateChatCompletionStreamResponse")


def test_a_completion_without_choices_fails_naming_the_field():
    broken = {key: value for key, value in COMPLETION.items() if key != "choices"}
    with pytest.raises(AssertionError, match=r"at \$: 'choices' is a required property"):
        assert_valid(broken, "CreateChatCompletionResponse")


def test_a_message_without_refusal_fails_naming_its_path():
    message = {"role": "assistant", "content": "hi"}
    broken = {**COMPLETION, "choices": [{**COMPLETION["choices"][0], "message": message}]}
    with pytest.raises(AssertionError) as caught:
        assert_valid(broken, "CreateChatCompletionResponse")
    said = str(caught.value)
    assert "at $.choices[0].message: 'refusal' is a required property" in said
    assert '"content": "hi"' in said  # the instance is quoted


@pytest.mark.parametrize("field, value", [("usage", None), ("choices", [{"index": 0, "delta": {}, "finish_reason": None,
                                                                         "logprobs": None}])])
def test_nullable_fields_of_openapi_3_0_accept_null(field, value):
    assert_valid({**CHUNK, field: value}, "CreateChatCompletionStreamResponse")


def test_a_nullable_enum_still_refuses_a_value_outside_it():
    broken = {**CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "finished"}]}
    with pytest.raises(AssertionError, match=r"at \$\.choices\[0\]\.finish_reason: 'finished' is not one of"):
        assert_valid(broken, "CreateChatCompletionStreamResponse")


def test_a_stream_event_is_checked_as_the_event_its_type_names():
    delta = {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0,
             "delta": "hi", "sequence_number": 1, "logprobs": []}
    assert_valid(delta, "ResponseStreamEvent")
    with pytest.raises(AssertionError, match=r"ResponseTextDeltaEvent: at \$\.delta: 5 is not of type 'string'"):
        assert_valid({**delta, "delta": 5}, "ResponseStreamEvent")
    with pytest.raises(AssertionError, match=r"at \$\.type: type 'response\.nothing' is none of ResponseStreamEvent"):
        assert_valid({**delta, "type": "response.nothing"}, "ResponseStreamEvent")


def test_a_failure_inside_a_union_names_the_member_its_type_chose():
    """Not "not valid under any of the given schemas", nor a field of another output item."""
    text = {"type": "output_text", "text": "hi", "logprobs": []}  # no annotations
    response = {"id": "resp_1", "object": "response", "created_at": 1700000000, "status": "completed", "model": "m",
                "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                            "content": [text]}],
                "tools": [], "tool_choice": "auto", "parallel_tool_calls": True, "error": None,
                "incomplete_details": None, "instructions": None, "metadata": {}, "temperature": 1, "top_p": 1}
    with pytest.raises(AssertionError) as caught:
        assert_valid(response, "Response")
    said = str(caught.value)
    assert "at $.output[0].content[0]: 'annotations' is a required property" in said
    assert "> OutputMessage > " in said and said.split("\n")[1].endswith("> OutputTextContent > required")
    assert_valid({**response, "output": [{**response["output"][0], "content": [{**text, "annotations": []}]}]},
                 "Response")


def test_a_nullable_reference_explains_the_referenced_schema():
    with pytest.raises(AssertionError, match=r"at \$\.usage: 'completion_tokens' is a required property"):
        assert_valid({**CHUNK, "choices": [], "usage": {"prompt_tokens": 1}}, "CreateChatCompletionStreamResponse")


def test_a_recursive_schema_checks_its_nested_levels():
    """``$recursiveRef`` (CompoundFilter's nested filters) is followed, not read as 'anything'."""
    leaf = {"type": "eq", "key": "lang", "value": "en"}
    assert_valid({"type": "and", "filters": [leaf, {"type": "or", "filters": [leaf]}]}, "CompoundFilter")
    assert errors({"type": "and", "filters": [{"type": "or", "filters": "not a list"}]}, "CompoundFilter")


def test_an_unknown_schema_name_says_how_to_add_it():
    with pytest.raises(KeyError, match="add it to ROOTS"):
        assert_valid({}, "NoSuchComponent")


# --- /v1/chat/completions ------------------------------------------------------------------


@pytest.fixture
def through(gateway, provider):
    """``through(type) -> RunningGateway`` with one provider ``x`` of that type."""
    return lambda kind: gateway({"providers": [provider("x", type=kind)]}, log=False)


@pytest.mark.parametrize("tools", [None, [WEATHER_TOOL]], ids=["text", "tools"])
@pytest.mark.parametrize("kind", PROVIDER_TYPES)
def test_a_chat_completion_is_valid(through, kind, tools):
    fields = {"tools": tools} if tools else {}
    answer = through(kind).chat(HELLO, **fields)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert_valid(body, "CreateChatCompletionResponse")
    assert bool(body["choices"][0]["message"].get("tool_calls")) == bool(tools)


@pytest.mark.parametrize("tools", [None, [WEATHER_TOOL]], ids=["text", "tools"])
@pytest.mark.parametrize("kind", PROVIDER_TYPES)
def test_every_streamed_chat_chunk_is_valid(through, kind, tools):
    fields = {"tools": tools} if tools else {}
    answer = through(kind).chat(HELLO, stream=True, stream_options={"include_usage": True}, **fields)
    assert answer.status_code == 200, answer.text
    chunks = data_events(answer.text)
    assert len(chunks) >= 3, answer.text
    for number, chunk in enumerate(chunks):
        try:
            assert_valid(chunk, "CreateChatCompletionStreamResponse")
        except AssertionError as failed:
            raise AssertionError(f"chunk {number} of {len(chunks)}: {failed}") from None
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("request_body, status", [
    ({"json": {"messages": "not a list"}}, 400),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
    ({"json": {"messages": HELLO, "model": "no-such-model"}}, 404),
    ({"content": b"hi", "headers": {"content-type": "text/plain"}}, 415),
], ids=["invalid-field", "invalid-json", "unknown-model", "not-json"])
def test_a_refused_request_has_a_valid_error(through, request_body, status):
    answer = through("openai").post("/v1/chat/completions", **request_body)
    assert answer.status_code == status, answer.text
    assert_valid(answer.json(), "ErrorResponse")


@pytest.mark.parametrize("kind", PROVIDER_TYPES)
@pytest.mark.parametrize("behavior, status", [
    ({"kind": "status", "status": 400, "body": {"error": {"message": "bad thing", "type": "invalid_request_error"}}},
     400),
    ({"kind": "status", "status": 429}, 429),
], ids=["upstream-400-without-param-and-code", "upstream-429"])
def test_an_upstream_error_passed_on_is_valid(through, upstream, kind, behavior, status):
    upstream.set_behavior("x", behavior)
    answer = through(kind).chat(HELLO)
    assert answer.status_code == status, answer.text
    assert_valid(answer.json(), "ErrorResponse")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_502_error_when_every_provider_fails_is_valid(gateway, provider, upstream, stream):
    for name in ("x", "y"):
        upstream.set_behavior(name, {"kind": "status", "status": 500})
    gw = gateway({"reliability": {"retries": 0}, "providers": [provider("x"), provider("y", type="anthropic")]},
                 log=False)
    answer = gw.chat(HELLO, stream=stream)
    assert answer.status_code == 502, answer.text
    assert_valid(answer.json(), "ErrorResponse")


@pytest.mark.parametrize("kind", PROVIDER_TYPES)
def test_a_stream_broken_midway_ends_with_a_valid_error(through, upstream, kind):
    upstream.set_behavior("x", {"kind": "stream_error_event", "cut_after": 1})
    answer = through(kind).chat(HELLO, stream=True)
    assert answer.status_code == 200, answer.text
    *chunks, last = data_events(answer.text)
    assert chunks, answer.text
    for chunk in chunks:
        assert_valid(chunk, "CreateChatCompletionStreamResponse")
    assert_valid(last, "ErrorResponse")


# --- /v1/models -----------------------------------------------------------------------------


@pytest.fixture
def models_gw(gateway, provider):
    return gateway({"providers": [provider("a"), provider("b", model="vendor/b-model", type="anthropic"),
                                  provider("c", type="gemini")]}, log=False)


def test_the_model_list_is_valid(models_gw):
    answer = models_gw.get("/v1/models")
    assert answer.status_code == 200, answer.text
    assert_valid(answer.json(), "ListModelsResponse")
    assert len(answer.json()["data"]) >= 5  # three providers, auto, a strategy


@pytest.mark.parametrize("model", ["a/a", "vendor/b-model", "b/vendor/b-model", "auto"])
def test_a_model_is_valid(models_gw, model):
    answer = models_gw.get(f"/v1/models/{model}")
    assert answer.status_code == 200, answer.text
    assert_valid(answer.json(), "Model")


def test_a_model_not_found_is_a_valid_error(models_gw):
    answer = models_gw.get("/v1/models/no-such-model")
    assert answer.status_code == 404, answer.text
    assert_valid(answer.json(), "ErrorResponse")


# --- /v1/responses and /v1/embeddings: run once a surface answers them ----------------------------


@unless_answered("/v1/responses")
@pytest.mark.parametrize("kind", PROVIDER_TYPES)
def test_a_response_is_valid(through, kind):
    answer = through(kind).post("/v1/responses", json={"model": "x", "input": "hi"})
    assert answer.status_code == 200, answer.text
    assert_valid(answer.json(), "Response")


@unless_answered("/v1/responses")
@pytest.mark.parametrize("tools", [None, [{"type": "function", "name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}]], ids=["text", "tools"])
@pytest.mark.parametrize("kind", PROVIDER_TYPES)
def test_every_streamed_response_event_is_valid(through, kind, tools):
    body = {"model": "x", "input": "hi", "stream": True, **({"tools": tools} if tools else {})}
    answer = through(kind).post("/v1/responses", json=body)
    assert answer.status_code == 200, answer.text
    events = data_events(answer.text)
    assert events and events[-1]["type"] == "response.completed", answer.text
    for number, event in enumerate(events):
        try:
            assert_valid(event, "ResponseStreamEvent")
        except AssertionError as failed:
            raise AssertionError(f"event {number} of {len(events)}: {failed}") from None
    assert_valid(events[-1]["response"], "Response")


@unless_answered("/v1/responses")
@pytest.mark.parametrize("kind", PROVIDER_TYPES)
def test_a_response_stream_broken_midway_has_valid_events(through, upstream, kind):
    upstream.set_behavior("x", {"kind": "stream_error_event", "cut_after": 1})
    answer = through(kind).post("/v1/responses", json={"model": "x", "input": "hi", "stream": True})
    assert answer.status_code == 200, answer.text
    events = data_events(answer.text)
    assert events and events[-1]["type"] == "response.failed", answer.text
    for event in events:
        assert_valid(event, "ResponseStreamEvent")


@unless_answered("/v1/responses")
def test_a_refused_response_request_has_a_valid_error(through):
    answer = through("openai").post("/v1/responses", json={"model": "x", "input": 5})
    assert answer.status_code == 400, answer.text
    assert_valid(answer.json(), "ErrorResponse")


@unless_answered("/v1/responses")
def test_a_response_when_every_provider_fails_has_a_valid_error(through, upstream):
    upstream.set_behavior("x", {"kind": "status", "status": 500})
    answer = through("openai").post("/v1/responses", json={"model": "x", "input": "hi"})
    assert answer.status_code == 502, answer.text
    assert_valid(answer.json(), "ErrorResponse")


@pytest.fixture
def embeddings_gw(gateway, provider, upstream):
    return gateway({"providers": [provider("e", kind="embeddings", endpoint=upstream.url + "/v1/embeddings")]},
                   log=False)


@unless_answered("/v1/embeddings")
@pytest.mark.parametrize("given", ["hi", ["hi", "there"]], ids=["one", "list"])
def test_an_embedding_is_valid(embeddings_gw, given):
    answer = embeddings_gw.post("/v1/embeddings", json={"model": "e", "input": given})
    assert answer.status_code == 200, answer.text
    assert_valid(answer.json(), "CreateEmbeddingResponse")
    assert len(answer.json()["data"]) == (1 if isinstance(given, str) else len(given))


@unless_answered("/v1/embeddings")
def test_a_refused_embedding_request_has_a_valid_error(embeddings_gw):
    answer = embeddings_gw.post("/v1/embeddings", json={"model": "e"})
    assert answer.status_code == 400, answer.text
    assert_valid(answer.json(), "ErrorResponse")


@unless_answered("/v1/embeddings")
def test_an_embedding_when_every_provider_fails_has_a_valid_error(embeddings_gw, upstream):
    upstream.set_behavior("e", {"kind": "status", "status": 500})
    answer = embeddings_gw.post("/v1/embeddings", json={"model": "e", "input": "hi"})
    assert answer.status_code == 502, answer.text
    assert_valid(answer.json(), "ErrorResponse")
