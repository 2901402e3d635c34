"""plugins/cache: a repeated request answered from the cache, through real gateways.

Each test counts the fake upstream's requests: a hit makes none. The main cases run with
the cache in the process and in Redis (``backend``).
"""

from __future__ import annotations

import anthropic
import pytest

from .conftest import add_key, cache_config, unique

HEADER = "x-modelbroker-cache"


def chat(gw, text: str, headers=None, **fields):
    body = {"model": "a", "messages": [{"role": "user", "content": text}], "temperature": 0, **fields}
    return gw.client.post("/v1/chat/completions", json=body, headers=headers or {})


def test_a_repeated_deterministic_request_makes_one_upstream_call(gateway, provider, upstream, backend):
    gw = gateway(cache_config(provider("a")), **backend)
    text = unique()
    first, second = chat(gw, text), chat(gw, text)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.headers[HEADER], second.headers[HEADER]) == ("miss", "hit")
    assert len(upstream.requests) == 1
    assert second.json() == first.json()
    assert float(first.headers["x-modelbroker-cost"]) > 0
    assert float(second.headers["x-modelbroker-cost"]) == 0
    assert second.headers["x-modelbroker-attempts"] == "0"
    assert second.headers["x-modelbroker-provider"] == "a/a"


def test_another_request_is_another_answer(gateway, provider, upstream):
    gw = gateway(cache_config(provider("a")))
    text = unique()
    chat(gw, text)
    for changed in (chat(gw, text + "!"), chat(gw, text, max_tokens=7), chat(gw, text, top_p=0.5),
                    chat(gw, text, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]),
                    chat(gw, text, response_format={"type": "json_object"})):
        assert changed.headers[HEADER] == "miss"
    assert len(upstream.requests) == 6


def test_no_hit_across_two_client_keys_unless_shared(gateway, provider, upstream, db_url):
    one, two = add_key(db_url, "one"), add_key(db_url, "two")
    gw = gateway(cache_config(provider("a")), database_url=db_url)
    text = unique()
    assert chat(gw, text, {"authorization": f"Bearer {one}"}).headers[HEADER] == "miss"
    assert chat(gw, text, {"authorization": f"Bearer {two}"}).headers[HEADER] == "miss"
    assert chat(gw, text, {"authorization": f"Bearer {two}"}).headers[HEADER] == "hit"
    assert len(upstream.requests) == 2

    shared = gateway(cache_config(provider("a"), shared=True), database_url=db_url)
    text = unique()
    assert chat(shared, text, {"authorization": f"Bearer {one}"}).headers[HEADER] == "miss"
    assert chat(shared, text, {"authorization": f"Bearer {two}"}).headers[HEADER] == "hit"
    assert len(upstream.requests) == 3


def test_only_deterministic_requests_are_cached_by_default(gateway, provider, upstream):
    gw = gateway(cache_config(provider("a")))
    text = unique()
    assert [chat(gw, text, temperature=0.7).headers[HEADER] for _ in range(2)] == ["bypass", "bypass"]
    assert [chat(gw, text, temperature=0.7, seed=1).headers[HEADER] for _ in range(2)] == ["miss", "hit"]
    no_temperature = {"model": "a", "messages": [{"role": "user", "content": text}]}
    assert gw.client.post("/v1/chat/completions", json=no_temperature).headers[HEADER] == "bypass"
    assert len(upstream.requests) == 4

    wide = gateway(cache_config(provider("a"), cache_all=True))
    assert [chat(wide, text, temperature=0.7).headers[HEADER] for _ in range(2)] == ["miss", "hit"]


def test_cache_control_no_cache_and_no_store(gateway, provider, upstream):
    gw = gateway(cache_config(provider("a")))
    text = unique()
    assert chat(gw, text, {"cache-control": "no-store"}).headers[HEADER] == "miss"  # not written
    assert chat(gw, text).headers[HEADER] == "miss"
    assert chat(gw, text, {"cache-control": "no-store"}).headers[HEADER] == "hit"  # read, still
    assert chat(gw, text, {"cache-control": "No-Cache"}).headers[HEADER] == "bypass"  # not read
    assert len(upstream.requests) == 3


def test_off_without_ttl_s(gateway, provider, upstream):
    gw = gateway({"providers": [provider("a")]})
    text = unique()
    answers = [chat(gw, text), chat(gw, text)]
    assert all(HEADER not in answer.headers for answer in answers)
    assert len(upstream.requests) == 2
    assert gw.gateway.pm.get_plugin("cache.store") is None  # not registered: lookup is never called


def test_a_streamed_hit_is_replayed_to_the_openai_sdk(gateway, provider, upstream, sdk, backend):
    gw = gateway(cache_config(provider("a")), **backend)
    client = sdk(gw)
    messages = [{"role": "user", "content": unique("stream me a longer answer please")}]
    seen = []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="a", messages=messages, temperature=0, stream=True, stream_options={"include_usage": True})
        chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        usage = [c.usage for c in chunks if c.usage]
        seen.append((raw.headers[HEADER], text, finish, usage[-1].total_tokens if usage else None))
    (miss, text, finish, tokens), (hit, replayed, finish_again, tokens_again) = seen
    assert (miss, hit) == ("miss", "hit")
    assert replayed == text and text.startswith("Fake reply from a")
    assert finish_again == finish == ["stop"]
    assert tokens_again == tokens > 0
    assert len(upstream.requests) == 1


def test_a_stream_and_a_whole_answer_are_kept_apart(gateway, provider, upstream):
    gw = gateway(cache_config(provider("a")))
    text = unique()
    chat(gw, text)
    with gw.client.stream("POST", "/v1/chat/completions", json={
            "model": "a", "messages": [{"role": "user", "content": text}], "temperature": 0, "stream": True}) as r:
        assert r.headers[HEADER] == "miss"
        r.read()
    assert len(upstream.requests) == 2


def test_responses_messages_and_embeddings_hits(gateway, provider, upstream, backend):
    gw = gateway(cache_config(provider("a"), provider("claude", type="anthropic"),
                              provider("emb", kind="embeddings", endpoint=upstream.url + "/v1/embeddings")),
                 **backend)
    text = unique()
    for path, body in (
        ("/v1/responses", {"model": "a", "input": text, "temperature": 0}),
        ("/v1/messages", {"model": "claude", "max_tokens": 50, "temperature": 0,
                          "messages": [{"role": "user", "content": text}]}),
        ("/v1/messages", {"model": "a", "max_tokens": 50, "temperature": 0,
                          "messages": [{"role": "user", "content": text}]}),
        ("/v1/embeddings", {"model": "emb", "input": text}),  # always cacheable
    ):
        calls = len(upstream.requests)
        first, second = gw.post(path, json=body), gw.post(path, json=body)
        assert (first.status_code, second.status_code) == (200, 200), (path, first.text)
        assert (first.headers[HEADER], second.headers[HEADER]) == ("miss", "hit"), path
        assert len(upstream.requests) == calls + 1, path
        a, b = first.json(), second.json()
        if path == "/v1/responses":  # a new response, with the same output
            assert b["id"] != a["id"] and b["output"][0]["content"] == a["output"][0]["content"]
        elif path == "/v1/messages":  # translated from chat, the id is the request's own
            assert b["content"] == a["content"] and b["usage"] == a["usage"]
        else:
            assert b == a, path


def test_a_streamed_messages_hit_is_replayed_to_the_anthropic_sdk(gateway, provider, upstream):
    gw = gateway(cache_config(provider("claude", type="anthropic")))
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": unique()}]
    texts = []
    for _ in range(2):
        events = list(client.messages.create(model="claude", max_tokens=50, messages=messages, stream=True,
                                             extra_body={"temperature": 0}))
        texts.append(("".join(e.delta.text for e in events if e.type == "content_block_delta"),
                      [e.type for e in events]))
    assert texts[0] == texts[1] and texts[0][0]
    assert texts[0][1][0] == "message_start" and texts[0][1][-1] == "message_stop"
    assert len(upstream.requests) == 1


def test_a_hit_is_in_app_log_the_ledger_and_metrics(gateway, provider, upstream, db_url):
    gw = gateway(cache_config(provider("a", cost_per_1k_tokens=1.0)), database_url=db_url)
    text = unique()
    first, second = chat(gw, text), chat(gw, text)
    cost = float(first.headers["x-modelbroker-cost"])
    usage = gw.get("/usage", params={"group_by": "provider"}).json()
    assert usage["totals"]["cache_hits"] == 1 and usage["totals"]["requests"] == 2
    assert usage["totals"]["attempts"] == 1
    assert usage["totals"]["cost"] == pytest.approx(cost)
    assert usage["totals"]["saved_cost"] == pytest.approx(cost)
    assert usage["groups"][0]["key"] == "a" and usage["groups"][0]["saved_cost"] == pytest.approx(cost)
    metrics = gw.get("/metrics").text
    assert 'modelbroker_cache_hits_total{surface="chat"} 1.0' in metrics
    assert 'modelbroker_cache_misses_total{surface="chat"} 1.0' in metrics
    assert f"modelbroker_cache_saved_cost_total {cost}" in metrics
    held = next(line for line in metrics.splitlines() if line.startswith("modelbroker_cache_bytes "))
    assert float(held.split()[1]) > 0
    lines = gw.log_lines()
    assert [line.get("cache_hit", False) for line in lines] == [False, True]
    hit = lines[1]
    assert (hit["attempt"], hit["cost"], hit["saved_cost"], hit["provider_id"]) == (0, 0.0, cost, "a/a")
    assert hit["request_id"] == second.headers["x-request-id"]


def test_an_answer_over_max_entry_bytes_is_not_kept(gateway, provider, upstream):
    gw = gateway(cache_config(provider("a"), max_entry_bytes=100))
    text = unique()
    assert [chat(gw, text).headers[HEADER] for _ in range(2)] == ["miss", "miss"]
    assert len(upstream.requests) == 2


def test_an_unreachable_redis_is_a_miss(gateway, provider, upstream, closed_port_url, caplog):
    url = closed_port_url.replace("http://", "redis://")
    gw = gateway(cache_config(provider("a")), redis_url=url)
    text = unique()
    answers = [chat(gw, text) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert [a.headers[HEADER] for a in answers] == ["miss"] * 3
    assert len(upstream.requests) == 3


@pytest.mark.parametrize("path, body", [
    ("/v1/responses", {"model": "a", "input": "x", "temperature": 0, "stream": True}),
    ("/generate", {"prompt": "x", "temperature": 0, "stream": True}),
], ids=["responses", "generate"])
def test_streamed_hits_on_the_other_surfaces(gateway, provider, upstream, path, body):
    gw = gateway(cache_config(provider("a")))
    body = {**body, **({"input": unique()} if "input" in body else {"prompt": unique()})}
    streams = []
    for _ in range(2):
        with gw.client.stream("POST", path, json=body) as r:
            streams.append((r.status_code, r.headers[HEADER], r.read().decode()))
    (s1, h1, t1), (s2, h2, t2) = streams
    assert (s1, h1, s2, h2) == (200, "miss", 200, "hit")
    assert len(upstream.requests) == 1
    assert "Fake reply f" in t2 and t2.count("data:") == t1.count("data:")
