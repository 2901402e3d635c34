"""Fixtures for the EchoWire tests: a fake EchoWire server, and providers.yaml files for it.

The plugin must be installed (``pip install -e .``), because ``GatewayServer``
loads plugins from their entry points, exactly as ``modelbroker serve`` does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fake_echowire import TEST_KEY as KEY
from fake_echowire import FakeEchoWire

from modelbroker._plugins.manager import make_plugin_manager
from modelbroker.fake_upstream import FakeUpstream


def pytest_sessionstart(session):
    if make_plugin_manager().get_plugin("echowire") is None:
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


@pytest.fixture(scope="session")
def openai_upstream():
    """modelbroker's fake OpenAI-compatible server, for a fallback provider."""
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def echo_provider(echowire: FakeEchoWire):
    """``echo_provider(name="echo", model="echo-1", **fields) -> dict``: a providers.yaml entry."""

    def make(name: str = "echo", model: str = "echo-1", **fields) -> dict:
        return {"name": name, "type": "echowire", "endpoint": echowire.url, "model": model,
                "api_key": KEY, "cost_per_1k_tokens": 0.5, **fields}

    return make


@pytest.fixture
def write_config(tmp_path: Path):
    """``write_config(*providers, **top) -> Path``: a providers.yaml with fast retries."""

    def write(*providers: dict, **top) -> Path:
        config = {"reliability": {"retries": 0, "backoff_initial_s": 0.01}, **top, "providers": list(providers)}
        path = tmp_path / "providers.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write
