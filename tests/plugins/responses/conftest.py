"""Fixtures for the Responses API tests: a gateway and the official openai SDK aimed at it,
the events of a raw stream, and a PostgreSQL database of the run's own.

PostgreSQL: ``MODELBROKER_TEST_DATABASE_URL`` names the server (as for the ledger's tests);
unset, ``postgresql://postgres@127.0.0.1:5432/test`` is used if it answers, else the
PostgreSQL tests are skipped. The run creates ``mb_resp_<random>`` and drops it at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import openai
import pytest

from modelbroker.plugins.storage.urls import DatabaseURL, safe_url

#: No retry on the same provider (fallback only), so each test sees the attempts it scripts.
RELIABILITY = {"retries": 0, "failure_threshold": 1000}
SDK_TIMEOUT = 10.0
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: Read at import: tests/conftest.py removes every MODELBROKER_* variable from each test's environment.
PG_URL_FROM_ENV = os.environ.get("MODELBROKER_TEST_DATABASE_URL")


@pytest.fixture
def start(gateway):
    """``start(*providers, plugins=None, **settings) -> RunningGateway``; ``plugins`` is the
    providers.yaml block (``{"responses": {"retention_days": ...}}``)."""

    def run(*providers: dict, plugins: dict | None = None, **settings):
        config = {"reliability": dict(RELIABILITY), "providers": list(providers)}
        if plugins:
            config["plugins"] = plugins
        return gateway(config, **settings)

    return run


@pytest.fixture
def client():
    """``client(gw) -> openai.OpenAI`` aimed at the gateway, no retries; closed at teardown."""
    made: list[openai.OpenAI] = []

    def make(gw, api_key: str = "sk-unused-by-an-open-gateway") -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=gw.url + "/v1", api_key=api_key, max_retries=0, timeout=SDK_TIMEOUT))
        return made[-1]

    yield make
    for sdk in made:
        sdk.close()


def sse_events(text: str) -> list[tuple[str, dict]]:
    """A raw event stream as (event name, data) pairs."""
    found, name = [], None
    for line in text.splitlines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            found.append((name, json.loads(line[6:])))
            name = None
    return found


def wait_for(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up after {timeout} s waiting for {what}"
        time.sleep(0.02)


# --- PostgreSQL ---------------------------------------------------------------------------


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


async def _admin(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(DatabaseURL.parse(url).dsn, timeout=5, command_timeout=30)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_url():
    """A database of this run's own on the test PostgreSQL server (skipped when there is none)."""
    server = PG_URL_FROM_ENV or DEFAULT_PG_URL
    try:
        asyncio.run(_admin(server, "SELECT 1"))
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        if PG_URL_FROM_ENV:
            pytest.fail(f"MODELBROKER_TEST_DATABASE_URL={safe_url(server)} is unreachable: {exc}")
        pytest.skip(f"no PostgreSQL at {safe_url(server)} ({type(exc).__name__}); set MODELBROKER_TEST_DATABASE_URL")
    name = f"mb_resp_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    yield _with_database(server, name)
    asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
