"""Fixtures for the EchoWire tests: a fake EchoWire server, and modelbroker's testing kit
(``gateway``, ``fake_upstream`` for an OpenAI-compatible fallback, ``free_port``).

The plugin must be installed (``pip install -e .``), because a gateway loads plugins
from their entry points, exactly as ``modelbroker serve`` does.
"""

from __future__ import annotations

import importlib.metadata

import pytest
from fake_echowire import TEST_KEY as KEY
from fake_echowire import FakeEchoWire

pytest_plugins = ["modelbroker.testing.pytest_plugin"]


def pytest_sessionstart(session):
    if not importlib.metadata.entry_points(group="modelbroker", name="echowire"):
        raise pytest.UsageError(
            "modelbroker-echo-wire is not installed: run `pip install -e .` in its directory first"
        )


@pytest.fixture(scope="session")
def _echowire_server():
    with FakeEchoWire(key=KEY) as fake:
        yield fake


@pytest.fixture
def echowire(_echowire_server: FakeEchoWire) -> FakeEchoWire:
    """The session's fake EchoWire server, with no failure, call or request left from another test."""
    _echowire_server.reset()
    return _echowire_server


@pytest.fixture
def echo_provider(echowire: FakeEchoWire):
    """``echo_provider(name="echo", model="echo-1", **fields) -> dict``: a providers.yaml entry."""

    def make(name: str = "echo", model: str = "echo-1", **fields) -> dict:
        return {"name": name, "type": "echowire", "endpoint": echowire.url, "model": model,
                "api_key": KEY, "cost_per_1k_tokens": 0.5, **fields}

    return make


@pytest.fixture
def config():
    """``config(*providers, **top) -> dict``: a providers.yaml with no retry unless asked for."""

    def make(*providers: dict, **top) -> dict:
        return {"reliability": {"retries": 0, "backoff_initial_s": 0.01}, **top, "providers": list(providers)}

    return make
