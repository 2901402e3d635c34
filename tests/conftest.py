"""Shared fixtures: the testing kit's (``modelbroker.testing.pytest_plugin``: ``gateway``,
``fake_upstream``, ``provider``, ``free_port``), and this suite's own around them.

    def test_x(gateway, provider, upstream):
        gw = gateway({"providers": [provider("a", priority=1)]})
        r = gw.generate({"prompt": "hi"})
        lines = gw.log_lines()   # stops the gateway first, so every line is flushed

Nothing here mocks a part of modelbroker: the gateway is ``modelbroker.testing.GatewayServer``
(uvicorn on a free 127.0.0.1 port) and the upstream is ``modelbroker.fake_upstream.FakeUpstream``.
Every file a gateway writes goes to the test's own temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI, OpenAI

from modelbroker._plugins.hookcall import HookCalls
from modelbroker._plugins.manager import make_plugin_manager
from modelbroker.fake_upstream import FakeUpstream
from modelbroker.testing import GatewayProcess, config_text
from modelbroker.testing._gateways import GatewayFactory

pytest_plugins = ["modelbroker.testing.pytest_plugin"]

REPO_ROOT = Path(__file__).resolve().parents[1]


# --- the environment ---------------------------------------------------------------


@pytest.fixture(autouse=True, scope="session")
def _clean_environment():
    """No MODELBROKER_* setting, provider key or OTEL_* variable from the developer's shell
    reaches a test (session-scoped, so that module-scoped gateways are built without them too).
    The MODELBROKER_TEST_* variables stay: they tell the tests where PostgreSQL and Redis are."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):  # MODELBROKER_TEST_* name this run's services, not a gateway setting
            if name.startswith("MODELBROKER_") and not name.startswith("MODELBROKER_TEST_"):
                patch.delenv(name)
        patch.delenv("GROQ_API_KEY", raising=False)
        for name in list(os.environ):  # a developer's tracing setup would make every gateway export spans
            if name.startswith("OTEL_"):
                patch.delenv(name)
        yield


def pytest_configure(config):
    """hypothesis keeps its examples and caches in ``.hypothesis/`` of the working directory: the
    checkout. Here they go to a temporary directory, removed at the end."""
    import hypothesis.configuration

    home = tempfile.mkdtemp(prefix="modelbroker-hypothesis-")
    hypothesis.configuration.set_hypothesis_home_dir(home)
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))


@pytest.fixture(autouse=True, scope="session")
def _checkout_left_alone():
    """At the end of the run: no test wrote into the checkout (a gateway started without a
    directory of its own writes app.log and modelbroker.db into its working directory, which
    would be the user's own data: a new file, or one the user already had, such as the demo's
    app.log, that changed), and no module of core/ or plugins/ was imported under a
    name other than its modelbroker.* one (two copies of a module: two of every class)."""
    before = _untracked_files()
    yield
    after = _untracked_files()
    written = sorted(path for path, seen in after.items() if before.get(path) != seen)
    assert not written, f"the tests wrote into the checkout: {written}; give each gateway a directory of its own"
    twice = sorted(name for name, module in list(sys.modules.items())
                   if not name.startswith("modelbroker") and _under(getattr(module, "__file__", None),
                                                                 REPO_ROOT / "core", REPO_ROOT / "plugins"))
    assert not twice, f"modules of the package imported under other names: {twice}"


def _untracked_files() -> dict[str, tuple[int, int] | None]:
    """Files git does not track in the checkout, ignored ones included (the virtualenv and caches
    aside), each with its size and modification time (None once it is gone)."""
    try:
        listed = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    paths = {line[3:] for line in listed.stdout.splitlines() if line[:2] in ("??", "!!")}
    return {path: _size_and_time(REPO_ROOT / path) for path in paths
            if not path.startswith((".venv/", "build/")) and "__pycache__/" not in path and ".egg-info/" not in path}


def _size_and_time(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _under(path: str | None, *folders: Path) -> bool:
    return path is not None and any(Path(path).resolve().is_relative_to(folder) for folder in folders)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def installed_strategies() -> list[str]:
    """The strategy names every plugin installed in the ``modelbroker`` entry-point group registers, sorted."""
    return sorted(_registrations("register_strategies"))


@pytest.fixture(scope="session")
def installed_adapter_types() -> list[str]:
    """The adapter ``type:`` values every installed plugin registers, sorted."""
    return sorted(_registrations("register_adapters"))


def _registrations(hook: str) -> list[str]:
    names: list[str] = []
    for _, function, argnames in HookCalls(make_plugin_manager()).implementations(hook):
        function(*[{"register": lambda name, factory: names.append(name), "config": None}[a] for a in argnames])
    return names


# --- the fake upstream -------------------------------------------------------------


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> FakeUpstream:
    """The testing kit's ``fake_upstream``: the session's, with nothing left from another test."""
    return fake_upstream


@pytest.fixture
def closed_port_url(free_port: int) -> str:
    """A chat-completions URL on a loopback port nobody listens on (connection refused)."""
    return f"http://127.0.0.1:{free_port}/v1/chat/completions"


# --- providers.yaml ----------------------------------------------------------------


@pytest.fixture
def write_config(tmp_path: Path):
    """``write_config(text_or_dict, name="providers.yaml") -> Path`` in the test's tmp_path."""

    def write(config: str | dict, name: str = "providers.yaml") -> Path:
        path = tmp_path / name
        path.write_text(config_text(config), encoding="utf-8")
        return path

    return write


# --- a running gateway -------------------------------------------------------------


def read_log(path: Path) -> list[dict[str, Any]]:
    """app.log as a list of dicts, one per line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(name="read_log")
def read_log_fixture():
    """``read_log(path) -> list[dict]``: the lines of an app.log."""
    return read_log


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
