"""The cache's stores and keys, on their own: LRU by bytes, expiry, Redis with a prefix and TTL."""

from __future__ import annotations

import asyncio
import tracemalloc
import uuid

import pytest

from modelbroker import ChatRequest, Completion, Principal, StreamChunk, Usage
from modelbroker.plugins.cache.entries import decode, encode
from modelbroker.plugins.cache.keys import cache_key, cacheable, directives
from modelbroker.plugins.cache.stores import MemoryStore, RedisStore


def test_the_memory_store_drops_the_least_recently_used_past_max_bytes():
    store = MemoryStore(max_bytes=30)
    store.put("a", b"x" * 10, 60)
    store.put("b", b"y" * 10, 60)
    store.put("c", b"z" * 10, 60)
    assert store.get("a") == b"x" * 10  # now the most recently used
    store.put("d", b"w" * 10, 60)  # 40 bytes: b, the least recently used, goes
    assert store.get("b") is None
    assert [store.get(k) is not None for k in "acd"] == [True, True, True]
    assert store.bytes == 30 and len(store) == 3
    store.put("big", b"v" * 31, 60)  # larger than the whole store: never kept
    assert store.get("big") is None and store.bytes == 30
    store.put("a", b"x" * 5, 60)  # replaced, counted once
    assert store.bytes == 25


async def test_the_memory_store_expires_an_answer_after_its_ttl():
    store = MemoryStore(max_bytes=100)
    store.put("a", b"x", 0.05)
    assert store.get("a") == b"x"
    await asyncio.sleep(0.06)
    assert store.get("a") is None and store.bytes == 0


async def test_the_redis_store_sets_a_prefixed_key_with_its_ttl(redis_url):
    prefix = f"modelbroker:test:{uuid.uuid4().hex[:8]}:"
    store = RedisStore(redis_url, prefix=prefix)
    try:
        await store.put("k", b"answer", 30)
        assert await store.get("k") == b"answer"
        assert 0 < await store.redis.pttl(prefix + "k") <= 30_000
        assert await store.get("other") is None
    finally:
        await store.redis.delete(prefix + "k")
        await store.close()


async def test_an_unreachable_redis_is_a_miss_logged_once(closed_port_url, caplog):
    store = RedisStore(closed_port_url.replace("http://", "redis://"))
    try:
        assert await store.get("k") is None
        await store.put("k", b"x", 1)
        assert await store.get("k") is None  # within the retry pause: no call at all
    finally:
        await store.close()
    assert sum("Redis is unreachable" in r.getMessage() for r in caplog.records) == 1


def chat(**fields) -> ChatRequest:
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], model="m", surface="chat", **fields)
    return request


def test_the_key_changes_with_what_shapes_the_answer_and_the_client():
    base = cache_key(chat(temperature=0), None, shared=False)
    assert cache_key(chat(temperature=0), None, shared=False) == base
    assert cache_key(chat(temperature=0, extra={"top_p": 0.5}), None, False) != base
    assert cache_key(chat(temperature=0, stream=True), None, False) != base
    assert cache_key(chat(temperature=0, max_tokens=5), None, False) != base
    one, two = Principal("one"), Principal("two")
    assert cache_key(chat(temperature=0), one, False) != cache_key(chat(temperature=0), two, False)
    assert cache_key(chat(temperature=0), one, True) == cache_key(chat(temperature=0), two, True)
    ordered = cache_key(chat(extra={"a": 1, "b": 2}), None, False)
    assert cache_key(chat(extra={"b": 2, "a": 1}), None, False) == ordered  # canonical JSON


@pytest.mark.parametrize("fields, cache_all, expected", [
    ({"temperature": 0}, False, True), ({"temperature": 0.7}, False, False), ({}, False, False),
    ({"temperature": 0.7, "extra": {"seed": 3}}, False, True), ({"temperature": 0.7}, True, True),
    ({"kind": "embeddings"}, False, True),
])
def test_what_is_cacheable(fields, cache_all, expected):
    assert cacheable(chat(**fields), cache_all) is expected


def test_cache_control_directives():
    assert directives("No-Cache, no-store") == {"no-cache", "no-store"}
    assert directives(None) == frozenset()


def test_an_entry_decodes_to_the_answer_it_was(provider):
    from modelbroker import ProviderConfig

    p = ProviderConfig(**provider("a"))
    completion = Completion(text="t", model="m", usage=Usage(1, 2, 3, cached_tokens=1), raw={"id": "x"}, cost=0.5)
    chunks = [StreamChunk(raw={"choices": []}, text="t", has_content=True, usage=Usage(1, 2, 3), finish_reason="stop")]
    stored = decode(encode(p, completion, chunks), {p.id: p})
    assert stored.provider is p and stored.completion.usage == completion.usage
    assert (stored.completion.text, stored.completion.raw, stored.completion.cost) == ("t", {"id": "x"}, 0.5)
    assert stored.chunks == chunks
    assert decode(encode(p, completion, None), {}) is None  # its provider is gone


@pytest.mark.parametrize("block, message", [
    ({"ttl_s": 0}, "plugins.cache.ttl_s: must be > 0"),
    ({"ttl_s": 10, "max_bytes": -1}, "plugins.cache.max_bytes: must be > 0"),
    ({"ttl": 10}, "plugins.cache.ttl"),
])
def test_modelbroker_check_refuses_a_bad_cache_block(write_config, provider, block, message):
    from modelbroker import ConfigError, Settings
    from modelbroker._routing.gateway import Gateway

    path = write_config({"providers": [provider("a")], "plugins": {"cache": block}})
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        Gateway.from_settings(Settings(config=str(path), log_file=""))


def test_an_entry_takes_the_memory_the_store_counts(provider):
    """orjson returns its worst-case buffer (4 KiB for a short answer, ~13x a long one's
    length): an entry kept as that buffer would hold far more than ``max_bytes`` counts."""
    from modelbroker import ProviderConfig

    p = ProviderConfig(**provider("a"))
    completions = [Completion(text=text, model="m", usage=Usage(1, 2, 3), raw={"text": text}, cost=0.5)
                   for text in ("short", "a longer answer " * 300)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        entries = [encode(p, completion, None) for completion in completions]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < sum(len(entry) for entry in entries) + 1_000
