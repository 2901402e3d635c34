"""Shared fixtures: one real fake upstream for the session, real gateways on loopback.

    def test_x(gateway, provider, upstream):
        gw = gateway({"providers": [provider("a", priority=1)]})
        r = gw.generate({"prompt": "hi"})
        lines = gw.log_lines()   # stops the gateway first, so every line is flushed

Nothing here mocks a part of modelbroker: the gateway is ``modelbroker.testing.GatewayServer``
(uvicorn on a free 127.0.0.1 port) and the upstream is ``modelbroker.fake_upstream.FakeUpstream``.
"""

from __future__ import annotations

import json
import os
import socket
import textwrap
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

import httpx
import pytest
import yaml
from openai import AsyncOpenAI, OpenAI

from modelbroker._plugins.hookcall import HookCalls
from modelbroker._plugins.manager import make_plugin_manager
from modelbroker.fake_upstream import FakeUpstream
from modelbroker.testing import GatewayProcess, GatewayServer

#: Every HTTP call a test makes is bounded by this (seconds).
HTTP_TIMEOUT = 10.0


# --- the environment ---------------------------------------------------------------


@pytest.fixture(autouse=True, scope="session")
def _clean_environment():
    """No MODELBROKER_* setting or provider key from the developer's shell reaches a test
    (session-scoped, so that module-scoped gateways are built without them too)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("MODELBROKER_"):
                patch.delenv(name)
        patch.delenv("GROQ_API_KEY", raising=False)
        yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def installed_strategies() -> list[str]:
    """The strategy names of every plugin installed in the ``modelbroker`` entry-point group, sorted."""
    hooks = HookCalls(make_plugin_manager())
    return sorted({name for _, names in hooks.each("strategy_names") for name in names})


@pytest.fixture(scope="session")
def installed_adapter_types() -> list[str]:
    """The adapter ``type:`` values of every installed plugin, sorted."""
    hooks = HookCalls(make_plugin_manager())
    return sorted({name for _, names in hooks.each("adapter_types") for name in names})


# --- the fake upstream -------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_upstream_server():
    """One FakeUpstream for the whole session (a real HTTP server on loopback)."""
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def upstream(fake_upstream_server: FakeUpstream) -> FakeUpstream:
    """The session's FakeUpstream with no behaviour, counter or recorded request left from another test."""
    fake_upstream_server.reset()
    yield fake_upstream_server
    fake_upstream_server.reset()


@pytest.fixture
def closed_port_url() -> str:
    """A chat-completions URL on a loopback port nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/chat/completions"


# --- providers.yaml ----------------------------------------------------------------


def config_text(config: str | dict) -> str:
    """YAML text for a config given as text (dedented) or as a dict."""
    if isinstance(config, str):
        return textwrap.dedent(config)
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture
def write_config(tmp_path: Path):
    """``write_config(text_or_dict, name="providers.yaml") -> Path`` in the test's tmp_path."""

    def write(config: str | dict, name: str = "providers.yaml") -> Path:
        path = tmp_path / name
        path.write_text(config_text(config), encoding="utf-8")
        return path

    return write


@pytest.fixture
def provider(upstream: FakeUpstream):
    """``provider(name, model=None, **fields) -> dict``: a providers.yaml entry on the fake upstream.

    The model defaults to the name; the price to 0.001 per 1k tokens.
    """

    def make(name: str, model: str | None = None, **fields: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": name, "endpoint": upstream.chat_url, "model": model or name}
        if not any(k.startswith("cost_per_1k") for k in fields):
            entry["cost_per_1k_tokens"] = 0.001
        entry.update(fields)
        return entry

    return make


# --- a running gateway -------------------------------------------------------------


def read_log(path: Path) -> list[dict[str, Any]]:
    """app.log as a list of dicts, one per line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(name="read_log")
def read_log_fixture():
    """``read_log(path) -> list[dict]``: the lines of an app.log."""
    return read_log


class RunningGateway:
    """A started ``GatewayServer`` plus an httpx client and its app.log path."""

    def __init__(self, server: GatewayServer, log_file: Path | None) -> None:
        self.server = server
        self.url = server.url
        self.log_file = log_file
        self.client = httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT)
        self.responses: list[httpx.Response] = []
        self._stopped = False

    @property
    def gateway(self):
        return self.server.gateway

    def generate(self, body: Any = None, *, content: bytes | str | None = None, **kwargs: Any) -> httpx.Response:
        """POST /generate with ``body`` as JSON, or raw ``content``; every response is kept."""
        if content is not None:
            kwargs.setdefault("headers", {"content-type": "application/json"})
            response = self.client.post("/generate", content=content, **kwargs)
        else:
            response = self.client.post("/generate", json=body, **kwargs)
        self.responses.append(response)
        return response

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.get(path, **kwargs)
        self.responses.append(response)
        return response

    def stop(self) -> None:
        """Shut the gateway down as on SIGTERM; the plugins flush app.log. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.client.close()
        self.server.stop()

    def log_lines(self) -> list[dict[str, Any]]:
        """Stop the gateway (full flush), then return app.log's lines as dicts."""
        self.stop()
        assert self.log_file is not None, "this gateway was started without a log file"
        assert self.log_file.exists(), f"{self.log_file} was not written"
        return read_log(self.log_file)


class GatewayFactory:
    """Starts gateways whose providers.yaml and app.log live in ``directory``; ``close()`` stops them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[RunningGateway] = []

    def __call__(self, config: str | dict, *, log: bool | Path = True, pm: Any = None,
                 **settings: Any) -> RunningGateway:
        number = len(self.started)
        path = self.directory / f"providers-{number}.yaml"
        path.write_text(config_text(config), encoding="utf-8")
        if log is True:
            log_file = self.directory / ("app.log" if not number else f"app-{number}.log")
        else:
            log_file = Path(log) if log else None
        settings.setdefault("database_url", f"sqlite:///{self.directory}/modelbroker-{number}.db")
        server = GatewayServer(path, log_file=log_file or "", pm=pm, **settings)
        server.start()
        running = RunningGateway(server, log_file)
        self.started.append(running)
        return running

    def close(self) -> None:
        for running in self.started:
            running.stop()


@pytest.fixture
def gateway(tmp_path: Path):
    """``gateway(config, *, log=True, pm=None, **settings) -> RunningGateway``, stopped at teardown.

    ``config`` is YAML text or a dict; app.log goes to ``tmp_path / "app.log"`` (the
    second gateway of a test to ``app-1.log``, ...), to ``log`` if it is a path, nowhere
    if ``log=False``.
    """
    factory = GatewayFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_gateway(tmp_path_factory):
    """Like ``gateway``, for a gateway shared by a module's tests (stopped after the module).

    Only for tests that leave no state behind in it; use ``fake_upstream_server.chat_url``
    for endpoints, since ``provider`` is per test.
    """
    factory = GatewayFactory(tmp_path_factory.mktemp("module-gateway"))
    yield factory
    factory.close()


# --- the gateway in its own process --------------------------------------------------


@pytest.fixture
def subprocess_env():
    """``subprocess_env(**extra) -> dict``: this environment (already without MODELBROKER_*
    settings and GROQ_API_KEY) plus ``extra``, for a child process."""

    def make(**extra: str) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}

    return make


@pytest.fixture
def gateway_process():
    """``gateway_process(config_path, env) -> GatewayProcess`` (ready), stopped at teardown."""
    started: list[GatewayProcess] = []

    def start(config: Path, env: dict[str, str]) -> GatewayProcess:
        process = GatewayProcess(config, env=env, cwd=REPO_ROOT)
        started.append(process)
        return process.wait_ready()

    yield start
    for process in started:
        process.stop()


# --- the official openai client, aimed at a gateway -----------------------------------

SDK_TIMEOUT = 10.0


@pytest.fixture
def sdk():
    """``sdk(gw) -> openai.OpenAI`` aimed at the gateway, no retries; closed at teardown."""
    clients: list[OpenAI] = []

    def make(gw) -> OpenAI:
        client = OpenAI(base_url=gw.url + "/v1", api_key="sk-client-side-unused", max_retries=0, timeout=SDK_TIMEOUT)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
async def async_sdk():
    """``async_sdk(gw) -> openai.AsyncOpenAI``, as ``sdk``."""
    clients: list[AsyncOpenAI] = []

    def make(gw) -> AsyncOpenAI:
        client = AsyncOpenAI(base_url=gw.url + "/v1", api_key="sk-client-side-unused", max_retries=0,
                             timeout=SDK_TIMEOUT)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
