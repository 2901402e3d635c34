"""The key table out of reach: refused before the first read, the last table kept after it."""

from __future__ import annotations

import asyncio
import logging
import time

from .conftest import (
    DEFAULT_PG_URL,
    PG_URL_FROM_ENV,
    REFRESH_S,
    _pg,
    add_key,
    database_of,
    keys_config,
    wait_for,
)


def test_before_the_key_table_is_read_every_request_is_refused(gateway, provider, upstream, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="modelbroker")
    database = tmp_path / "down.db"
    database.mkdir()  # SQLite cannot open a folder: the database is "down"
    gw = gateway(keys_config(provider("a")), database_url=f"sqlite:///{database}")
    refused = gw.generate({"prompt": "hi"})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "keys_unavailable"
    assert gw.get("/health").status_code == 200
    assert "MODELBROKER_DISABLED_PLUGINS=keys" in caplog.text
    ready = gw.get("/health/ready")  # a load balancer sends no traffic to a replica that refuses it all
    assert ready.status_code == 503 and ready.json()["failing"] == ["keys.guard"], ready.text
    assert "keys_unavailable" in ready.json()["checks"]["keys.guard"]["error"]
    assert str(database) not in ready.text  # the probe is open to all: no path, no host

    database.rmdir()  # back, and empty: no key, so the gateway opens
    wait_for(lambda: gw.generate({"prompt": "hi"}).status_code == 200, "the key table to be read")
    assert gw.get("/health/ready").json()["checks"]["keys.guard"] == {
        "ok": True, "enforcing": False, "table_current": True}


def test_after_the_first_read_the_last_table_stays_in_force(gateway, provider, upstream, postgres_url, caplog):
    caplog.set_level(logging.ERROR, logger="modelbroker")
    asyncio.run(_pg(postgres_url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public"))
    key = add_key(postgres_url, "kept")
    gw = gateway(keys_config(provider("a")), database_url=postgres_url)
    server = PG_URL_FROM_ENV or DEFAULT_PG_URL
    name = database_of(postgres_url)
    asyncio.run(_pg(server, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
                    f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
    try:
        wait_for(lambda: "cannot re-read the key table" in caplog.text, "the failed refresh to be logged")
        time.sleep(2 * REFRESH_S)
        assert gw.generate({"prompt": "hi"}).status_code == 401
        assert gw.generate({"prompt": "hi"}, headers={"authorization": f"Bearer {key}"}).status_code == 200
    finally:
        asyncio.run(_pg(server, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
