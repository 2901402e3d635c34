"""Fixtures for the prompt_size tests: a fake model server and a providers.yaml for it.

The plugin must be installed (``pip install -e .``), because ``GatewayServer``
loads plugins from their entry points, exactly as ``modelbroker serve`` does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelbroker._plugins.manager import make_plugin_manager
from modelbroker.fake_upstream import FakeUpstream

#: A small, cheap model and a large, dear one, both on the fake upstream (URL is filled in).
CONFIG = """
strategy: prompt_size
reliability:
  retries: 0
plugins:
  prompt_size:
    threshold_tokens: THRESHOLD
providers:
  - name: small
    endpoint: "URL"
    model: small-model
    context_window: 8192
    cost_per_1k_tokens: 0.0001
  - name: large
    endpoint: "URL"
    model: large-model
    context_window: 128000
    cost_per_1k_input_tokens: 0.003
    cost_per_1k_output_tokens: 0.015
"""


def pytest_sessionstart(session):
    if make_plugin_manager().get_plugin("prompt_size") is None:
        raise pytest.UsageError(
            "modelbroker-prompt-size is not installed: run `pip install -e .` in its directory first"
        )


@pytest.fixture(scope="session")
def upstream():
    with FakeUpstream() as up:
        yield up


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream):
    upstream.reset()


@pytest.fixture
def write_config(tmp_path: Path, upstream: FakeUpstream):
    """``write_config(threshold=500) -> Path``: CONFIG with that threshold, on the fake upstream."""

    def write(threshold: object = 500) -> Path:
        path = tmp_path / "providers.yaml"
        path.write_text(CONFIG.replace("URL", upstream.chat_url).replace("THRESHOLD", str(threshold)))
        return path

    return write
