"""The Redis state store against the machine's real Redis, and through an outage."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest

from modelbroker.plugins.redis_state import RedisState, state_store
from modelbroker.testing import free_port

REDIS_URL = os.environ.get("MODELBROKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str) -> bool:
    host_port = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host, int(port or 6379)), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_url() -> str:
    if not _reachable(REDIS_URL):
        if os.environ.get("MODELBROKER_TEST_REDIS_URL") or os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is unreachable; CI needs it (start redis-server)")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable; set MODELBROKER_TEST_REDIS_URL to test it")
    return REDIS_URL


@pytest.fixture
def prefix() -> str:
    return f"mbtest:{uuid.uuid4().hex[:8]}:"


async def test_two_replicas_share_one_counter(redis_url, prefix):
    one, two = RedisState(redis_url, prefix=prefix), RedisState(redis_url, prefix=prefix)
    try:
        await one.add("spend:team", 0.25, ttl_s=60)
        assert await two.add("spend:team", 0.5, ttl_s=60) == pytest.approx(0.75)
        assert await one.get("spend:team") == pytest.approx(0.75)
        assert one.status()["shared"] is True
    finally:
        await one.close()
        await two.close()


async def test_a_rate_limit_window_is_held_across_replicas(redis_url, prefix):
    one, two = RedisState(redis_url, prefix=prefix), RedisState(redis_url, prefix=prefix)
    try:
        outcomes = [await (one if i % 2 else two).take("rpm:key", limit=5, window_s=60) for i in range(8)]
        assert outcomes[:5] == [None] * 5
        assert all(wait is not None and 0 < wait <= 60 for wait in outcomes[5:])
    finally:
        await one.close()
        await two.close()


async def test_a_cooldown_published_by_one_replica_is_seen_by_the_other(redis_url, prefix):
    one, two = RedisState(redis_url, prefix=prefix), RedisState(redis_url, prefix=prefix)
    try:
        until = time.time() + 30
        await one.publish_cooldown("groq/llama", until)
        await one.publish_cooldown("groq/llama", until - 20)  # never shortened
        assert (await two.cooldowns())["groq/llama"] == pytest.approx(until)
    finally:
        await one.close()
        await two.close()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
async def test_an_outage_falls_back_to_local_state_and_sharing_resumes(prefix, caplog):
    port = free_port()
    store = RedisState(f"redis://127.0.0.1:{port}/0", prefix=prefix)
    try:
        assert await store.add("n", 1, ttl_s=60) == 1  # nothing listens: answered locally
        assert await store.add("n", 1, ttl_s=60) == 2
        assert store.status()["shared"] is False
        assert "unreachable" in caplog.text
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        try:
            for _ in range(50):  # the probe runs every second
                if store.status()["shared"]:
                    break
                await asyncio.sleep(0.1)
            assert store.status()["shared"] is True
            assert await store.add("n", 1, ttl_s=60) == 1  # counting in Redis from here on
        finally:
            server.terminate()
            server.wait(5)
    finally:
        await store.close()


def test_the_store_is_offered_only_when_a_redis_url_is_set():
    class Settings:
        redis_url = ""

    assert state_store(Settings()) is None
    Settings.redis_url = "redis://user:secret@127.0.0.1:1/0"
    store = state_store(Settings())
    assert isinstance(store, RedisState)
    assert "secret" not in str(store.status())


def test_a_url_that_is_not_redis_says_which_schemes_it_takes():
    with pytest.raises(ValueError) as refused:
        RedisState("http://:Zq7pW9@127.0.0.1:6379/0")
    assert str(refused.value) == "MODELBROKER_REDIS_URL must start with redis://, rediss:// or unix://"
