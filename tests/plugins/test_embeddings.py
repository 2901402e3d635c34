"""plugins/embeddings.py: ``POST /v1/embeddings`` over the providers of ``kind: embeddings``.

Through a real gateway with the official ``openai`` SDK (``client.embeddings.create``), over
the fake upstream's OpenAI embeddings (``{url}/v1/embeddings``) and Gemini's ``embedContent`` /
``batchEmbedContents``. The SDK asks for ``encoding_format: base64`` unless told otherwise and
decodes it, so both forms are tested, with the conversions the gateway makes when an upstream
answers in the other one. The adapters' own cases are in test_openai_http.py and test_gemini.py.
"""

from __future__ import annotations

import base64
import math
from array import array

import openai
import pytest
from openai_schema import assert_valid

from modelbroker import hookimpl
from modelbroker.plugins.embeddings import to_base64, to_floats
from modelbroker.plugins.gemini.fake import fake_vector as gemini_vector
from modelbroker.plugins.openai_http.fake import fake_vector


def expected(text: str, dimensions: int = 1536) -> list[float]:
    """The vector the fake upstream's OpenAI format gives ``text``."""
    return fake_vector(text.encode(), dimensions).tolist()


@pytest.fixture
def embedder(provider, upstream):
    """``embedder(name, **fields)``: an OpenAI-type embeddings provider on the fake upstream."""

    def make(name: str, **fields):
        return provider(name, kind="embeddings", endpoint=upstream.url + "/v1/embeddings", **fields)

    return make


@pytest.fixture
def emb_gw(gateway, embedder, provider):
    """A gateway with one embeddings provider (``emb``) and one chat provider (``chat``)."""
    return gateway({"providers": [embedder("emb", model="text-embedding-3-small"), provider("chat")],
                    "reliability": {"retries": 0}})


# --- the SDK, both encodings -------------------------------------------------------------------


def test_one_string_the_sdk_default_travels_as_base64_end_to_end(emb_gw, sdk, upstream):
    answer = sdk(emb_gw).embeddings.with_raw_response.create(model="emb", input="hello world")
    raw = answer.http_response.json()
    assert isinstance(raw["data"][0]["embedding"], str)  # not decoded, not re-encoded by the gateway
    assert upstream.requests[-1]["json"] == {"input": "hello world", "encoding_format": "base64",
                                             "model": "text-embedding-3-small"}
    parsed = answer.parse()  # the SDK decodes base64 when the caller did not choose a format
    assert parsed.data[0].embedding == expected("hello world")
    assert math.isclose(sum(v * v for v in parsed.data[0].embedding), 1.0, rel_tol=1e-5)
    assert parsed.model == "text-embedding-3-small" and parsed.object == "list"
    assert parsed.usage.prompt_tokens == 2 and parsed.usage.total_tokens == 2
    assert answer.headers["x-modelbroker-provider"] == "emb/text-embedding-3-small"


def test_a_list_of_strings_keeps_its_order(emb_gw, sdk):
    texts = ["the first one", "second", "a third input here"]
    answer = sdk(emb_gw).embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    assert [item.index for item in answer.data] == [0, 1, 2]
    assert [item.embedding for item in answer.data] == [expected(text) for text in texts]
    assert answer.usage.prompt_tokens == 3 + 1 + 4


@pytest.mark.parametrize("tokens, count", [([101, 2023, 102], 3), ([[1, 2, 3], [4, 5]], 5)],
                         ids=["one-token-array", "token-arrays"])
def test_token_arrays_are_passed_on_as_sent(emb_gw, sdk, upstream, tokens, count):
    answer = sdk(emb_gw).embeddings.create(model="emb", input=tokens)
    assert upstream.requests[-1]["json"]["input"] == tokens
    assert len(answer.data) == (1 if isinstance(tokens[0], int) else len(tokens))
    assert answer.usage.prompt_tokens == count  # the fake counts one token per id


def test_dimensions_are_honoured(emb_gw, sdk, upstream):
    answer = sdk(emb_gw).embeddings.create(model="emb", input="short", dimensions=8)
    assert upstream.requests[-1]["json"]["dimensions"] == 8
    assert answer.data[0].embedding == expected("short", 8)


def test_explicit_float_and_explicit_base64_give_the_same_vector(emb_gw, sdk):
    client = sdk(emb_gw)
    floats = client.embeddings.create(model="emb", input="same text", encoding_format="float").data[0].embedding
    text = client.embeddings.create(model="emb", input="same text", encoding_format="base64").data[0].embedding
    assert isinstance(floats, list) and isinstance(text, str)  # an explicit choice is left as it is
    assert array("f", base64.b64decode(text)).tolist() == floats == expected("same text")


@pytest.mark.parametrize("upstream_form, client_form", [("float", "base64"), ("base64", "float")])
def test_the_gateway_converts_when_the_upstream_answers_in_the_other_form(gateway, embedder, sdk, upstream,
                                                                          upstream_form, client_form):
    """``options.encoding_format`` fixes what the upstream is asked for (a server without base64);
    the client still gets what it asked for."""
    gw = gateway({"providers": [embedder("emb", options={"encoding_format": upstream_form})]})
    answer = sdk(gw).embeddings.with_raw_response.create(model="emb", input="convert me", encoding_format=client_form)
    assert upstream.requests[-1]["json"]["encoding_format"] == upstream_form
    vector = answer.http_response.json()["data"][0]["embedding"]
    if client_form == "base64":
        assert isinstance(vector, str) and to_floats(vector) == expected("convert me")
    else:
        assert vector == expected("convert me")


def test_base64_is_little_endian_float32():
    assert base64.b64decode(to_base64([1.0, -2.5])) == b"\x00\x00\x80\x3f\x00\x00\x20\xc0"
    assert to_floats(to_base64([0.25, 3.0])) == [0.25, 3.0]


def test_the_answer_is_a_valid_openai_embedding_list(emb_gw):
    answer = emb_gw.post("/v1/embeddings", json={"model": "emb", "input": ["a", "b"], "dimensions": 4})
    assert answer.status_code == 200, answer.text
    assert_valid(answer.json(), "CreateEmbeddingResponse")
    assert emb_gw.post("/embeddings", json={"input": "no /v1 and no model"}).status_code == 200


class Records:
    """A plugin that keeps every successful attempt's record."""

    def __init__(self) -> None:
        self.records = []

    @hookimpl
    def on_result(self, record):
        self.records.append(record)


def test_other_fields_are_passed_on_and_user_names_the_client(gateway, embedder, sdk, upstream):
    spy = Records()
    gw = gateway({"providers": [embedder("emb")]}, plugins={"spy": spy})
    sdk(gw).embeddings.create(model="emb", input="hi", user="alice", extra_body={"input_type": "query"})
    sent = upstream.requests[-1]["json"]
    assert sent["user"] == "alice" and sent["input_type"] == "query" and sent["model"] == "emb"
    (record,) = spy.records
    assert record.client == "alice" and record.surface == "embeddings" and record.route == "/v1/embeddings"


# --- refused requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("body, param", [
    ({"model": "emb"}, "input"),
    ({"model": "emb", "input": ""}, "input"),
    ({"model": "emb", "input": []}, "input"),
    ({"model": "emb", "input": 7}, "input"),
    ({"model": "emb", "input": {"text": "x"}}, "input"),
    ({"model": "emb", "input": ["ok", 3]}, "input[1]"),
    ({"model": "emb", "input": ["ok", ""]}, "input[1]"),
    ({"model": "emb", "input": [1, True]}, "input[1]"),
    ({"model": "emb", "input": [[1], []]}, "input[1]"),
    ({"model": "emb", "input": ["x"] * 2049}, "input"),
    ({"model": "emb", "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": "emb", "input": "x", "dimensions": "8"}, "dimensions"),
    ({"model": "emb", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "", "input": "x"}, "model"),
    ({"model": "emb", "input": "x", "user": 5}, "user"),
])
def test_a_bad_request_is_refused_naming_the_field(emb_gw, upstream, body, param):
    answer = emb_gw.post("/v1/embeddings", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].startswith(param)
    assert_valid(answer.json(), "ErrorResponse")
    assert not upstream.requests


def test_the_sdk_sees_a_bad_request_error(emb_gw, sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(emb_gw).embeddings.create(model="emb", input=[[1, 2], [3.5]])
    assert caught.value.body["param"] == "input[1][0]"


def test_a_token_id_the_upstream_refuses_is_the_clients_400(emb_gw, sdk, upstream):
    """Ids are checked to be integers; whether one is in the vocabulary only the upstream knows."""
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(emb_gw).embeddings.create(model="emb", input=[[1, 2], [-3]])
    assert caught.value.body["param"] == "input" and "'$.input' is invalid" in caught.value.body["message"]
    assert len(upstream.requests) == 1


# --- routing: only among embeddings providers -----------------------------------------------------


def test_a_failing_provider_falls_back_within_the_request(gateway, embedder, sdk, upstream):
    upstream.set_behavior("first", {"kind": "status", "status": 500})
    gw = gateway({"providers": [embedder("first", priority=1), embedder("second", priority=2)],
                  "reliability": {"retries": 0}})
    answer = sdk(gw).embeddings.with_raw_response.create(model="auto", input="fall back")
    assert answer.headers["x-modelbroker-provider"] == "second/second"
    assert answer.headers["x-modelbroker-attempts"] == "2"
    assert answer.parse().data[0].embedding == expected("fall back")
    assert dict(upstream.calls) == {"first": 1, "second": 1}
    lines = gw.log_lines()
    assert [(line["provider"], line["success"]) for line in lines] == [("first", False), ("second", True)]
    assert lines[0]["status"] == 500


def test_every_provider_failing_is_a_502_listing_the_attempts(gateway, embedder, upstream):
    upstream.set_behavior("*", {"kind": "malformed"})
    gw = gateway({"providers": [embedder("a"), embedder("b")], "reliability": {"retries": 0}})
    answer = gw.post("/v1/embeddings", json={"input": "x"})
    assert answer.status_code == 502, answer.text
    assert [a["error"] for a in answer.json()["error"]["attempts"]] == ["malformed", "malformed"]


def test_chat_and_embeddings_never_cross(emb_gw, sdk, upstream):
    client = sdk(emb_gw)
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    client.embeddings.create(model="auto", input="hi")
    assert dict(upstream.calls) == {"chat": 1, "text-embedding-3-small": 1}
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="emb", messages=[{"role": "user", "content": "hi"}])
    message = caught.value.body["message"]
    assert caught.value.body["code"] == "model_not_found" and "available: chat/chat, chat, auto" in message
    assert "emb" not in message.split("available:")[1]
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="chat", input="hi")
    assert "text-embedding-3-small" in caught.value.body["message"] and "chat/chat" not in caught.value.body["message"]


def test_without_an_embeddings_provider_the_answer_says_how_to_add_one(gateway, provider):
    gw = gateway({"providers": [provider("chat")]})
    answer = gw.post("/v1/embeddings", json={"input": "x"})
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "no_provider"
    assert "add one with 'kind: embeddings'" in answer.json()["error"]["message"]


def test_models_lists_the_embeddings_model(emb_gw, sdk):
    ids = [model.id for model in sdk(emb_gw).models.list()]
    assert {"emb/text-embedding-3-small", "text-embedding-3-small", "chat/chat"} <= set(ids)


def test_the_cost_is_the_input_tokens_at_the_input_price(gateway, embedder, sdk):
    gw = gateway({"providers": [embedder("emb", cost_per_1k_input_tokens=0.02, cost_per_1k_output_tokens=5.0)]})
    answer = sdk(gw).embeddings.with_raw_response.create(model="emb", input="four words in here")
    assert float(answer.headers["x-modelbroker-cost"]) == pytest.approx(4 * 0.02 / 1000)
    (line,) = gw.log_lines()
    assert (line["prompt_tokens"], line["completion_tokens"], line["total_tokens"]) == (4, 0, 4)
    assert line["cost"] == pytest.approx(4 * 0.02 / 1000) and line["success"] is True


# --- Gemini ------------------------------------------------------------------------------------------


@pytest.fixture
def gem_emb(gateway, provider):
    """``gem_emb(*others)``: a gateway whose first embeddings provider is Gemini's ``gemini-embedding-001``."""

    def start(*others):
        gem = provider("gem", model="gemini-embedding-001", type="gemini", kind="embeddings", priority=1,
                       cost_per_1k_input_tokens=0.15, cost_per_1k_output_tokens=0)
        return gateway({"providers": [gem, *others], "reliability": {"retries": 0}})

    return start


def test_gemini_one_input_is_an_embed_content_call(gem_emb, sdk, upstream):
    gw = gem_emb()
    answer = sdk(gw).embeddings.with_raw_response.create(model="gem", input="hello gemini", dimensions=16)
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-embedding-001:embedContent"
    assert sent["json"] == {"content": {"parts": [{"text": "hello gemini"}]}, "outputDimensionality": 16}
    assert isinstance(answer.http_response.json()["data"][0]["embedding"], str)  # floats, encoded as asked
    parsed = answer.parse()
    assert parsed.data[0].embedding == pytest.approx(list(gemini_vector("hello gemini", 16)), rel=1e-6)
    assert parsed.model == "gemini-embedding-001" and parsed.usage.prompt_tokens > 0
    (line,) = gw.log_lines()
    assert line["tokens_estimated"] is True  # Gemini reports no usage
    assert line["cost"] == pytest.approx(line["prompt_tokens"] * 0.15 / 1000)


def test_gemini_several_inputs_are_batched_a_hundred_a_call(gem_emb, sdk, upstream):
    texts = [f"text number {i}" for i in range(150)]
    answer = sdk(gem_emb()).embeddings.create(model="gem", input=texts, dimensions=4, encoding_format="float")
    calls = [r for r in upstream.requests if r["path"].endswith(":batchEmbedContents")]
    assert [len(call["json"]["requests"]) for call in calls] == [100, 50]
    assert calls[0]["json"]["requests"][0] == {"model": "models/gemini-embedding-001",
                                               "content": {"parts": [{"text": "text number 0"}]},
                                               "outputDimensionality": 4}
    assert [item.index for item in answer.data] == list(range(150))
    assert answer.data[120].embedding == list(gemini_vector("text number 120", 4))
    assert_valid(answer.model_dump(), "CreateEmbeddingResponse")


def test_gemini_refuses_token_arrays_and_another_provider_takes_them(gem_emb, sdk, embedder, upstream):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gem_emb()).embeddings.create(model="auto", input=[1, 2, 3])
    assert caught.value.body["code"] == "unsupported_input" and caught.value.body["param"] == "input"
    assert "token" in caught.value.body["message"] and not upstream.requests
    gw = gem_emb(embedder("oa", priority=2))
    answer = sdk(gw).embeddings.with_raw_response.create(model="auto", input=[1, 2, 3])
    assert answer.headers["x-modelbroker-provider"] == "oa/oa"
    health = {p["id"]: p["state"] for p in gw.get("/health").json()["providers"]}
    assert health["gem/gemini-embedding-001"] == "healthy"  # the request's fault, not the provider's
