"""The example plugins in examples/, built and installed the way a user installs a plugin.

Each distribution is copied to a temporary folder (setuptools builds in the source
tree), built by pip and installed into a folder of its own with ``--target``,
offline. Gateways and CLI commands then run in subprocesses with that folder on
PYTHONPATH, so the plugins are found through their entry points, exactly as an
installed third-party package is. Nothing is installed into this environment, so
the rest of the suite never sees these plugins.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from modelbroker.testing import GatewayProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
PROMPT_SIZE = EXAMPLES / "modelbroker-prompt-size"
ECHO_WIRE = EXAMPLES / "modelbroker-echo-wire"
FAULTY = Path(__file__).resolve().parent / "fixtures" / "faulty_plugin"

#: Every subprocess is bounded by this (seconds).
SUBPROCESS_TIMEOUT = 120

_SCRIPT = Path(sys.executable).with_name("modelbroker")
#: The ``modelbroker`` command, as a user runs it (the module if the script is missing).
MODELBROKER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "modelbroker"]


def copy_source(source: Path, into: Path) -> Path:
    """A clean copy of a distribution's source (pip builds in the tree it is given)."""
    target = into / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(
        "__pycache__", "build", "*.egg-info", ".pytest_cache", "dist"))
    return target


def pip_install(sources: list[Path], target: Path) -> None:
    """``pip install`` the distributions into ``target``: offline, no dependencies, no build isolation."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(target), *map(str, sources)],
        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
    )
    hint = ""
    if "bdist_wheel" in done.stderr:
        hint = ("\nsetuptools older than 70.1 needs the `wheel` package to build a wheel: "
                "`pip install wheel` (it is in modelbroker's [test] extra)")
    assert done.returncode == 0, done.stdout + done.stderr + hint


class Site:
    """A folder that distributions were installed into, and the sources they were built from."""

    def __init__(self, path: Path, sources: dict[str, Path]) -> None:
        self.path = path
        self.sources = sources

    def env(self, subprocess_env, **extra: str) -> dict[str, str]:
        """A child environment in which the installed distributions are importable."""
        return subprocess_env(PYTHONPATH=str(self.path), **extra)


@pytest.fixture(scope="session")
def examples_site(tmp_path_factory) -> Site:
    """modelbroker-prompt-size and modelbroker-echo-wire, built and installed into one folder."""
    build = tmp_path_factory.mktemp("examples-src")
    sources = {source.name: copy_source(source, build) for source in (PROMPT_SIZE, ECHO_WIRE)}
    target = tmp_path_factory.mktemp("examples-site")
    pip_install(list(sources.values()), target)
    for dist in ("modelbroker_prompt_size", "modelbroker_echo_wire"):
        assert (target / f"{dist}-1.0.0.dist-info" / "entry_points.txt").exists(), sorted(target.iterdir())
    return Site(target, sources)


@pytest.fixture(scope="session")
def faulty_site(tmp_path_factory) -> Site:
    """The faulty fixture plugin (tests/examples/fixtures/faulty_plugin), installed into a folder."""
    source = copy_source(FAULTY, tmp_path_factory.mktemp("faulty-src"))
    target = tmp_path_factory.mktemp("faulty-site")
    pip_install([source], target)
    return Site(target, {FAULTY.name: source})


@pytest.fixture(name="pip_install")
def pip_install_fixture():
    """``pip_install(sources, target)``: distributions built and installed into a folder, offline."""
    return pip_install


@pytest.fixture
def run_cli():
    """``run_cli(*args, env=...) -> CompletedProcess``: the ``modelbroker`` command, as a user runs it."""

    def run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*MODELBROKER, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=timeout)

    return run


class Served(GatewayProcess):
    """``modelbroker serve`` in a subprocess, shared by a module's tests (``gateway_process``
    in tests/conftest.py starts one per test), with ``site`` on its PYTHONPATH."""

    def __init__(self, config: dict, site: Site, workdir: Path, **env: str) -> None:
        path = workdir / "providers.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.log_file = workdir / "app.log"
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(site.path),
                     "MODELBROKER_LOG_FILE": str(self.log_file), **env}
        super().__init__(path, env=child_env, cwd=REPO_ROOT, command=MODELBROKER,
                         output_path=workdir / "serve.out")

    def wait_ready(self, timeout: float = 30.0) -> Served:
        return super().wait_ready(timeout)

    def log_lines(self, request_ids: set[str], count: int, timeout: float = 5.0) -> list[dict]:
        """The app.log lines of ``request_ids``, once ``count`` of them are written (file_log
        flushes every 0.2 s)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_file.read_text(encoding="utf-8") if self.log_file.exists() else ""
            lines = [line for line in map(json.loads, text.splitlines()) if line["request_id"] in request_ids]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """``serve(config, site, **env) -> Served`` (ready): one gateway for a module, stopped after it."""
    started: list[Served] = []

    def start(config: dict, site: Site, **env: str) -> Served:
        started.append(Served(config, site, tmp_path_factory.mktemp("served"), **env))
        return started[-1].wait_ready()

    yield start
    for served in started:
        served.stop()


def _load_fake_echowire():
    """The example's fake EchoWire server module, loaded from its file (it needs only the
    standard library), so the example package itself is never imported here."""
    path = ECHO_WIRE / "tests" / "fake_echowire.py"
    spec = importlib.util.spec_from_file_location("modelbroker_examples_fake_echowire", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fake_echowire_module():
    return _load_fake_echowire()


@pytest.fixture(scope="session")
def _echowire_server(fake_echowire_module):
    with fake_echowire_module.FakeEchoWire(key=fake_echowire_module.TEST_KEY) as fake:
        yield fake


@pytest.fixture
def echowire(_echowire_server):
    """The session's fake EchoWire server (a real HTTP server on 127.0.0.1), reset for this test."""
    _echowire_server.reset()
    yield _echowire_server
    _echowire_server.reset()
