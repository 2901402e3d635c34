"""The response cache's tests: real gateways on the fake upstream, with the cache in memory
and in Redis.

Redis: ``MODELBROKER_TEST_REDIS_URL`` names it; when set and unreachable, the Redis tests
fail. Unset, ``redis://127.0.0.1:6379/15`` is used if it answers, else those tests are
skipped. Every test sends prompts of its own (``unique``), so runs sharing a Redis never
find each other's answers, and the answers expire.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest
from client_keys import add_key as add_key  # the tests here import it from this conftest

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
#: Read at import: tests/conftest.py removes every MODELBROKER_* variable from each test's environment.
REDIS_URL_FROM_ENV = os.environ.get("MODELBROKER_TEST_REDIS_URL")


def unique(text: str = "hello") -> str:
    """A prompt no other test (or run, sharing a Redis) sends."""
    return f"{text} {uuid.uuid4().hex[:12]}"


def cache_config(*providers, **cache) -> dict:
    """providers.yaml with these providers and the cache on (``ttl_s`` 60 unless given)."""
    return {"providers": list(providers), "reliability": {"retries": 0},
            "plugins": {"cache": {"ttl_s": 60, **cache}}}


def _reachable(url: str) -> str | None:
    host_port = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host, int(port or 6379)), timeout=0.5):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = REDIS_URL_FROM_ENV or DEFAULT_REDIS_URL
    problem = _reachable(url)
    if problem and REDIS_URL_FROM_ENV:
        pytest.fail(f"MODELBROKER_TEST_REDIS_URL={url} is unreachable: {problem}")
    if problem:
        pytest.skip(f"no Redis at {url} ({problem}); set MODELBROKER_TEST_REDIS_URL to run these tests")
    return url


@pytest.fixture(params=["memory", "redis"])
def backend(request) -> dict:
    """The gateway settings of each store: none (in the process), then ``redis_url``."""
    if request.param == "memory":
        return {}
    return {"redis_url": request.getfixturevalue("redis_url")}


@pytest.fixture
def db_url(tmp_path) -> str:
    """The database of the test's gateway (the ledger and the client keys): an SQLite file."""
    return f"sqlite:///{(tmp_path / 'modelbroker.db').as_posix()}"


