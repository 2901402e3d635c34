"""The development server and several workers, as real processes: ``modelbroker serve --reload``
and ``uvicorn main:app --reload`` apply a saved providers.yaml through the atomic reload, refuse an
invalid one in one line, and stop altogether, reloader included, on a bad one at startup;
``modelbroker serve --workers 2`` serves from two processes (core/_cli/serve.py,
core/_server/config_watch.py, main.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from modelbroker.testing import free_port

MODELBROKER = Path(sys.executable).with_name("modelbroker")
BAD = "strategy: fastest\n"
REFUSED = "changed, and the change is refused; the running configuration is unchanged: "


class Server:
    """A command started in ``directory``, its stderr collected line by line."""

    def __init__(self, command: list[str], directory: Path, env: dict[str, str], port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.config = directory / "providers.yaml"
        self.lines: list[str] = []
        self.process = subprocess.Popen(command, cwd=directory, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def providers(self) -> list[str]:
        return [p["id"] for p in httpx.get(f"{self.url}/health", timeout=5).json()["providers"]]

    def wait_for(self, check, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if value := check():
                    return value
            except httpx.HTTPError:
                pass
            assert self.process.poll() is None, "\n".join(self.lines)
            assert time.monotonic() < deadline, "\n".join(self.lines)
            time.sleep(0.1)

    def exit_code(self, timeout: float = 30) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # the reloader and its child alike
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(5)


@pytest.fixture
def start(tmp_path, subprocess_env, repo_root):
    """``start(kind, config_text, *options) -> Server``: ``serve`` (modelbroker serve) or ``uvicorn``
    (uvicorn main:app) in tmp_path/work, whose providers.yaml is ``config_text``; everything it
    writes goes there."""
    started: list[Server] = []
    work = tmp_path / "work"
    work.mkdir()

    def run(kind: str, text: str, *options: str, **env: str) -> Server:
        (work / "providers.yaml").write_text(text, encoding="utf-8")
        port = free_port()
        command = {"serve": [str(MODELBROKER), "serve", "--port", str(port)],
                   "uvicorn": [sys.executable, "-m", "uvicorn", "main:app", "--app-dir", str(repo_root),
                               "--port", str(port)]}[kind]
        settings = {"MODELBROKER_LOG_FILE": str(work / "app.log"),
                    "MODELBROKER_DATABASE_URL": f"sqlite:///{work / 'usage.db'}"}
        server = Server([*command, *options], work, subprocess_env(**settings, **env), port)
        started.append(server)
        return server

    yield run
    for server in started:
        server.stop()


def providers_yaml(provider, *names: str) -> str:
    lines = ["providers:"]
    for name in names:
        entry = provider(name)
        lines.append("  - {" + ", ".join(f"{key}: {value!r}" for key, value in entry.items()) + "}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind", ["serve", "uvicorn"])
def test_reload_applies_a_saved_config_and_refuses_a_bad_one(kind, start, provider):
    server = start(kind, providers_yaml(provider, "a"), "--reload")
    assert server.wait_for(server.providers) == ["a/a"]

    server.config.write_text(providers_yaml(provider, "a", "b"), encoding="utf-8")
    server.wait_for(lambda: server.providers() == ["a/a", "b/b"], timeout=15)
    assert server.wait_for(lambda: [line for line in server.lines if "reloaded providers.yaml: 2 providers" in line])

    server.config.write_text(BAD, encoding="utf-8")
    server.wait_for(lambda: [line for line in server.lines if REFUSED in line], timeout=15)
    time.sleep(1)  # a second line would come within the watch's debounce
    refused = [line for line in server.lines if REFUSED in line]
    assert len(refused) == 1, server.lines
    assert refused[0].endswith("providers.yaml: strategy: unknown strategy 'fastest'; installed strategies: "
                               + refused[0].split("installed strategies: ")[1])
    assert server.providers() == ["a/a", "b/b"]  # the old configuration still serves


@pytest.mark.parametrize("kind", ["serve", "uvicorn"])
def test_a_bad_config_at_startup_stops_the_reloader_too(kind, start):
    server = start(kind, BAD, "--reload")
    code = server.exit_code(timeout=30)
    message = [line for line in server.lines if "unknown strategy 'fastest'" in line]
    assert len(message) == 1 and "Traceback" not in "\n".join(server.lines), server.lines
    if kind == "serve":  # checked before uvicorn starts
        assert code == 2
        assert message[0].startswith("modelbroker: providers.yaml: strategy: unknown strategy 'fastest'")
    else:  # the child says it, and asks uvicorn's reloader to stop; uvicorn picks the reloader's status
        assert message[0].startswith("modelbroker: cannot start: providers.yaml: strategy: unknown strategy")
        assert any("Stopping reloader process" in line for line in server.lines), server.lines


def test_watch_config_false_leaves_the_file_alone_under_reload(start, provider):
    server = start("uvicorn", providers_yaml(provider, "a"), "--reload", MODELBROKER_WATCH_CONFIG="false")
    server.wait_for(server.providers)
    server.config.write_text(providers_yaml(provider, "a", "b"), encoding="utf-8")
    time.sleep(2)
    assert server.providers() == ["a/a"]


def test_serve_with_two_workers(start, provider):
    server = start("serve", providers_yaml(provider, "a"), "--workers", "2")
    assert server.wait_for(server.providers) == ["a/a"]
    warning = "WARNING modelbroker: 2 workers and no MODELBROKER_REDIS_URL: each worker keeps its own cooldowns, " \
              "rate limits and spend"
    assert server.lines.count(warning) == 1
    server.wait_for(lambda: sum("Application startup complete." in line for line in server.lines) == 2)
    server.stop()
    assert server.process.returncode == 0


def test_serve_with_two_workers_and_a_bad_config(start):
    server = start("serve", BAD, "--workers", "2")
    assert server.exit_code() == 2
    assert server.lines[-1].startswith("modelbroker: providers.yaml: strategy: unknown strategy 'fastest'")
    assert not any("Uvicorn running" in line for line in server.lines)


def test_reload_and_workers_together_are_refused(start, provider):
    server = start("serve", providers_yaml(provider, "a"), "--reload", "--workers", "2")
    assert server.exit_code() == 2
    assert server.lines == ["modelbroker: --reload runs one process: leave out --workers (or MODELBROKER_WORKERS)"]
