"""modelbroker's testing kit (the gateway, fake_upstream and provider fixtures), and a
check that the plugin is installed: a gateway loads plugins from their entry points,
exactly as ``modelbroker serve`` does (``pip install -e .``)."""

from __future__ import annotations

import importlib.metadata

import pytest

pytest_plugins = ["modelbroker.testing.pytest_plugin"]


def pytest_sessionstart(session):
    if not importlib.metadata.entry_points(group="modelbroker", name="prompt_size"):
        raise pytest.UsageError(
            "modelbroker-prompt-size is not installed: run `pip install -e .` in its directory first"
        )


@pytest.fixture
def config(provider):
    """``config(threshold=500) -> dict``: a small, cheap model and a large, dear one, on the fake upstream."""

    def make(threshold: object = 500) -> dict:
        return {
            "strategy": "prompt_size",
            "reliability": {"retries": 0},
            "plugins": {"prompt_size": {"threshold_tokens": threshold}},
            "providers": [
                provider("small", "small-model", context_window=8192, cost_per_1k_tokens=0.0001),
                provider("large", "large-model", context_window=128000, cost_per_1k_input_tokens=0.003,
                         cost_per_1k_output_tokens=0.015),
            ],
        }

    return make
