"""Fixtures for the Responses API tests: a gateway and the official openai SDK aimed at it,
the events of a raw stream, and a PostgreSQL database of the run's own.

PostgreSQL as tests/testdb.py sets it up: the run creates ``mb_resp_<random>`` and drops it
at the end.
"""

from __future__ import annotations

import json
import time

import openai
import pytest
from testdb import own_database

#: No retry on the same provider (fallback only), so each test sees the attempts it scripts.
RELIABILITY = {"retries": 0, "failure_threshold": 1000}
SDK_TIMEOUT = 10.0


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
    """A raw event stream as (event name, data) pairs. Lines end at a newline only, as SSE's do:
    ``str.splitlines`` would also cut at a line separator (U+2028) inside the JSON."""
    found, name = [], None
    for line in text.split("\n"):
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


@pytest.fixture(scope="session")
def postgres_url():
    """A database of this run's own on the test PostgreSQL server (skipped when there is none)."""
    yield from own_database("mb_resp")
