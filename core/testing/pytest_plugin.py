"""pytest fixtures for testing modelbroker plugins against a real gateway and a fake upstream.

Turn them on in the ``conftest.py`` at the root of your tests::

    pytest_plugins = ["modelbroker.testing.pytest_plugin"]

- ``fake_upstream``: a fake model server on a free loopback port (``FakeUpstream``), one for
  the session, with no behaviour, counter or recorded request left from another test. It
  speaks every wire format an installed adapter brings a fake for (OpenAI's, Anthropic's
  and Gemini's with the built-ins); ``fake_upstream.endpoint(type)`` is a provider's endpoint.
- ``provider``: ``provider(name, model=None, type="openai", **fields) -> dict``, a providers.yaml
  entry on the fake upstream (the model defaults to the name, the price to 0.001 per 1k tokens).
- ``gateway``: ``gateway(config, *, plugins=None, load_installed=True, log=True, **settings)``
  starts a real gateway for ``config`` (YAML text or a mapping), on a free port of
  127.0.0.1, every file it writes in the test's ``tmp_path``, and stops it at teardown. It
  gives a ``RunningGateway``: ``.url``, ``.client`` (httpx), ``.generate(body)``,
  ``.chat(messages)``, ``.log_lines()`` (stops it first, so app.log is complete).
- ``free_port``: a TCP port of 127.0.0.1 that nothing listens on.

The plugin is not loaded unless asked for, so installing modelbroker adds no fixture to
another project's tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def fake_upstream_server() -> Iterator[Any]:
    """One FakeUpstream for the whole session (a real HTTP server on loopback)."""
    from modelbroker.fake_upstream import FakeUpstream

    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
def fake_upstream(fake_upstream_server: Any) -> Iterator[Any]:
    """The session's FakeUpstream, with no behaviour, counter or recorded request left from another test."""
    fake_upstream_server.reset()
    yield fake_upstream_server
    fake_upstream_server.reset()


@pytest.fixture
def provider(fake_upstream: Any):
    """``provider(name, model=None, type="openai", **fields) -> dict``: a providers.yaml entry on the fake upstream."""

    def make(name: str, model: str | None = None, type: str = "openai", **fields: Any) -> dict[str, Any]:  # noqa: A002
        # A type the fake speaks no format of (an adapter answering in-process, say) gets a path of its own.
        endpoint = fake_upstream.endpoint(type) if type in fake_upstream.formats else f"{fake_upstream.url}/{type}"
        entry: dict[str, Any] = {"name": name, "type": type, "endpoint": endpoint, "model": model or name}
        if type != "openai":
            entry["api_key"] = "fake-key-for-tests"  # the fake, as the real APIs, refuses a call without one
        if not any(key.startswith("cost_per_1k") for key in fields):
            entry["cost_per_1k_tokens"] = 0.001
        entry.update(fields)
        return entry

    return make


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Any]:
    """``gateway(config, *, plugins=None, load_installed=True, log=True, **settings) -> RunningGateway``.

    Stopped at teardown. app.log goes to ``tmp_path / "app.log"`` for the first gateway of a
    test (``log=False``: none; a path: there), the other files to a folder of its own."""
    from modelbroker.testing._gateways import GatewayFactory

    factory = GatewayFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    from modelbroker.testing._servers import free_port as find

    return find()
