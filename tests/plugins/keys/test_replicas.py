"""Two gateway processes behind one Redis hold one limit together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from .conftest import REFRESH_S, add_key, clear_of_minute_end, unique

REQUESTS = 30
RPM = 10


def test_two_gateway_processes_share_one_rate_limit(provider, upstream, write_config, gateway_process,
                                                    subprocess_env, db_url, redis_url, tmp_path):
    key = add_key(db_url, unique("replicas"), rpm=RPM)
    config = write_config({"providers": [provider("a")], "plugins": {"keys": {"refresh_s": REFRESH_S}}})

    def start(n: int):
        return gateway_process(config, subprocess_env(
            MODELBROKER_DATABASE_URL=db_url, MODELBROKER_REDIS_URL=redis_url,
            MODELBROKER_LOG_FILE=str(tmp_path / f"app-{n}.log")))

    with ThreadPoolExecutor(2) as pool:
        gateways = list(pool.map(start, range(2)))
    clear_of_minute_end(margin_s=3)
    statuses = []
    with httpx.Client(timeout=10, headers={"authorization": f"Bearer {key}"}) as client:
        for n in range(REQUESTS):
            answer = client.post(gateways[n % 2].url + "/generate", json={"prompt": "hi"})
            statuses.append(answer.status_code)
    assert statuses.count(200) == RPM and statuses.count(429) == REQUESTS - RPM, statuses
    assert statuses[:RPM] == [200] * RPM
    for gw in gateways:
        health = httpx.get(gw.url + "/health", timeout=10).json()
        assert health["shared_state"]["backend"] == "redis" and health["shared_state"]["shared"] is True
