"""The ``lookup`` and ``on_stored_answer`` hooks: a plugin answers a request from an answer it
kept, with no attempt; every surface renders it, a stream replayed from its chunks."""

from __future__ import annotations

import asyncio
import logging

from modelbroker import Completion, Stored, StreamChunk, Usage, hookimpl


class Keeper:
    """Keeps each whole answer and stream by prompt; answers a prompt it has seen."""

    def __init__(self):
        self.kept = {}
        self.stored_records = []

    @hookimpl
    def lookup(self, request, headers):
        found = self.kept.get((request.prompt_text(), request.stream))
        if found is None or headers.get("x-fresh"):
            return None
        request.response_headers = {"x-kept": "yes"}
        return Stored(*found)

    @hookimpl
    def on_result(self, provider, request, result, chunks):
        self.kept[(request.prompt_text(), request.stream)] = (provider, result, chunks)

    @hookimpl
    def on_stored_answer(self, provider, stored, record):
        self.stored_records.append((provider.id, stored, record))


def test_hook_lookup(gateway, provider, upstream):
    keeper = Keeper()
    gw = gateway({"providers": [provider("a", cost_per_1k_tokens=1.0)]}, plugins={"keeper": keeper})
    first = gw.chat("one two")
    second = gw.chat("one two")
    assert len(upstream.requests) == 1
    assert second.json() == first.json()
    assert (second.headers["x-kept"], second.headers["x-modelbroker-attempts"]) == ("yes", "0")
    assert float(second.headers["x-modelbroker-cost"]) == 0
    assert "x-kept" not in first.headers
    fresh = gw.client.post("/v1/chat/completions", headers={"x-fresh": "1"},
                           json={"model": "a", "messages": [{"role": "user", "content": "one two"}]})
    assert fresh.status_code == 200  # the hook sees the client's headers
    assert len(upstream.requests) == 2
    # a stream's chunks reach on_result, and a stored stream is replayed from them
    body = {"model": "a", "messages": [{"role": "user", "content": "three"}], "stream": True}
    streamed = [gw.client.post("/v1/chat/completions", json=body).text for _ in range(2)]
    assert len(upstream.requests) == 3
    assert streamed[1] == streamed[0] and "data: [DONE]" in streamed[1]
    _, _, chunks = keeper.kept[("three", True)]
    assert chunks and all(isinstance(chunk, StreamChunk) for chunk in chunks)


def test_a_stored_whole_answer_is_streamed_as_one_chunk(gateway, provider, upstream):
    class Always:
        @hookimpl
        def lookup(self, request, config):
            answer = Completion(text="kept words", model="m", usage=Usage(1, 2, 3), cost=0.5)
            return Stored(config.providers[0], answer)

    gw = gateway({"providers": [provider("a")]}, plugins={"always": Always()})
    with gw.client.stream("POST", "/v1/chat/completions", json={
            "model": "a", "messages": [{"role": "user", "content": "x"}], "stream": True}) as r:
        text = r.read().decode()
    assert '"content":"kept words"' in text and upstream.requests == []
    assert gw.generate({"prompt": "x"}).json()["response"] == "kept words"


def test_hook_on_stored_answer(gateway, provider, upstream):
    keeper = Keeper()
    gw = gateway({"providers": [provider("a", cost_per_1k_tokens=1.0)]}, plugins={"keeper": keeper})
    first = gw.generate({"prompt": "four five"})
    second = gw.generate({"prompt": "four five"})
    ((provider_id, stored, record),) = keeper.stored_records
    assert provider_id == "a/a" and stored.completion.cost == float(first.headers["x-modelbroker-cost"])
    assert (record.attempt, record.outcome, record.cache_hit, record.cost, record.total_tokens) == (0, "ok", True,
                                                                                                   0.0, 0)
    assert record.saved_cost == stored.completion.cost > 0
    assert record.request_id == second.headers["x-request-id"] and record.latency_ms >= 0
    assert second.json()["response"] == first.json()["response"]


def test_a_failing_lookup_is_a_miss(gateway, provider, upstream, caplog):
    class Broken:
        @hookimpl
        def lookup(self):
            raise RuntimeError("store down")

    class Late:
        @hookimpl
        def lookup(self):
            async def fail():
                await asyncio.sleep(0)
                raise OSError("store down")
            return fail()

    for plugin in (Broken(), Late()):
        gw = gateway({"providers": [provider("a")]}, plugins={"broken": plugin})
        with caplog.at_level(logging.WARNING, logger="modelbroker"):
            assert gw.chat("hi").status_code == 200
        assert any("'broken'" in r.getMessage() and "lookup" in r.getMessage() for r in caplog.records)
        caplog.clear()
