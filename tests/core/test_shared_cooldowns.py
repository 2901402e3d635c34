"""A cooldown learned by one replica is honoured by the other, through Redis."""

from __future__ import annotations

import os
import socket
import time
import uuid

import httpx
import pytest

REDIS_URL = os.environ.get("MODELBROKER_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_url() -> str:
    host, port = REDIS_URL.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1].split(":")
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
    except OSError as exc:
        if os.environ.get("MODELBROKER_TEST_REDIS_URL"):
            pytest.fail(f"MODELBROKER_TEST_REDIS_URL={REDIS_URL} is unreachable: {exc}")
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}); set MODELBROKER_TEST_REDIS_URL to run this test")
    return REDIS_URL


def _state_of(gw, provider_id: str) -> str:
    rows = httpx.get(gw.url + "/health", timeout=10).json()["providers"]
    return next(row["state"] for row in rows if row["id"] == provider_id)


def test_a_cooldown_found_by_one_replica_is_honoured_by_the_other(
    provider, upstream, write_config, gateway_process, subprocess_env, redis_url, tmp_path,
):
    broken = f"broken-{uuid.uuid4().hex[:8]}"  # unique: the shared store outlives this test
    upstream.set_behavior(broken, {"kind": "status", "status": 401})
    config = write_config({
        "reliability": {"retries": 0, "cooldown_s": 30},
        "providers": [provider(broken, priority=1), provider("steady", priority=2)],
    })
    replicas = [
        gateway_process(config, subprocess_env(MODELBROKER_REDIS_URL=redis_url,
                                               MODELBROKER_LOG_FILE=str(tmp_path / f"app-{n}.log"),
                                               MODELBROKER_DISABLED_PLUGINS="keys"))
        for n in range(2)
    ]
    first, second = replicas
    answer = httpx.post(first.url + "/generate", json={"prompt": "hi"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["provider"] == "steady/steady"
    assert upstream.calls[broken] == 1  # a 401 cools a provider down at once
    provider_id = f"{broken}/{broken}"
    assert _state_of(first, provider_id) == "cooling_down"

    deadline = time.monotonic() + 5  # replicas read shared cooldowns every second
    while _state_of(second, provider_id) != "cooling_down":
        assert time.monotonic() < deadline, "the second replica never heard of the cooldown"
        time.sleep(0.1)
    answer = httpx.post(second.url + "/generate", json={"prompt": "hi"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["attempts"] == 1
    assert upstream.calls[broken] == 1  # the second replica did not try it
