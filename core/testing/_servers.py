"""Real gateways on loopback, for this project's tests and for plugin authors' tests.

    with GatewayServer("providers.yaml") as gw:
        httpx.post(gw.url + "/generate", json={"prompt": "hi"})
    gw.log_lines()   # app.log, complete: every on_shutdown has run

``GatewayServer`` is uvicorn in a background thread, listening on a free port of
127.0.0.1: requests cross a real socket, exactly as in production. ``GatewayProcess``
runs ``modelbroker serve`` in a fresh interpreter instead, for a test that needs its own
process (a plugin installed on ``PYTHONPATH``, several replicas). Both keep every file the
gateway writes (app.log, the ledger's database and spill file) in a directory of their
own, never in the current one.
"""

from __future__ import annotations

import atexit
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from modelbroker._config.settings import Settings
from modelbroker._server.app import create_app


class GatewayStartupError(RuntimeError):
    """The gateway did not start; the message is the reason the gateway itself gave."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def file_settings(directory: Path) -> dict[str, str]:
    """Where a gateway in ``directory`` writes: its app.log, its ledger's database and spill file."""
    return {"log_file": str(directory / "app.log"), "database_url": f"sqlite:///{directory.as_posix()}/modelbroker.db",
            "ledger_spill_file": str(directory / "ledger-spill.jsonl")}


class GatewayServer:
    """A gateway for ``config`` served by uvicorn in a thread; ``url`` is its base URL.

    ``config`` is the path of a providers.yaml, or its content as a mapping. ``directory``
    holds every file the gateway writes (a new temporary directory by default, removed when
    the interpreter exits); ``log_file`` and the other settings (``MODELBROKER_*`` names in
    lower case) override. ``plugins`` (name -> module or object) are registered besides the
    installed ones, or alone with ``load_installed=False``; ``pm``, a plugin manager built
    by the caller, replaces all of that (modelbroker's own tests use it).
    """

    def __init__(self, config: str | Path | Mapping[str, Any], *, directory: str | Path | None = None,
                 plugins: Mapping[str, object] | None = None, load_installed: bool = True, pm: Any = None,
                 **settings: Any) -> None:
        self.directory = Path(directory) if directory is not None else _temporary_directory()
        if isinstance(config, Mapping):
            path = self.directory / "providers.yaml"
            path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
            config = path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # gc_tuning off: this gateway shares the test process, whose collector it must not freeze.
        values = {"gc_tuning": False, **file_settings(self.directory),
                  **{name: str(value) if isinstance(value, Path) else value for name, value in settings.items()}}
        self.settings = Settings(config=Path(config), port=self.port, **values)
        self.log_file = Path(self.settings.log_file) if self.settings.log_file else None
        self.app = create_app(self.settings, pm, plugins=plugins, load_installed=load_installed)
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self._thread = threading.Thread(target=self._server.run, name="gateway-server", daemon=True)

    @property
    def gateway(self):
        """The running gateway, as a plugin's route sees it (``modelbroker.GatewayView``)."""
        return self.app.state.gateway

    def start(self, timeout: float = 10.0) -> GatewayServer:
        """Return once the gateway listens; raise GatewayStartupError with the gateway's reason if it does not."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise self._failure()
            if time.monotonic() > deadline:
                self.stop()
                raise GatewayStartupError(f"the gateway did not start listening in {timeout} s")
            time.sleep(0.01)
        return self

    def _failure(self) -> GatewayStartupError:
        failure = self.app.startup_failure
        if failure is None:
            return GatewayStartupError(f"the gateway did not start (port {self.port} taken?)")
        error = GatewayStartupError(self.app.startup_error or f"modelbroker: cannot start: "
                                                              f"{type(failure).__name__}: {failure}")
        error.__cause__ = failure
        return error

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down as on SIGTERM: in-flight requests finish, plugins flush. Idempotent."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)

    def log_lines(self) -> list[dict[str, Any]]:
        """app.log's lines as dicts (complete once the gateway has stopped)."""
        if self.log_file is None or not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text(encoding="utf-8").splitlines() if line.strip()]

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GatewayProcess:
    """``modelbroker serve --config config`` in a subprocess on a free port; ``url`` is its base URL.

    ``env`` is the child's whole environment. Its app.log and ledger go to ``directory``
    (default: beside ``config``) unless ``env`` sets ``MODELBROKER_LOG_FILE`` or
    ``MODELBROKER_DATABASE_URL``; its output goes to ``output_path`` (default: in
    ``directory``), which ``output()`` reads back.
    """

    def __init__(self, config: Path, *, env: Mapping[str, str], cwd: Path | None = None,
                 command: Sequence[str] = (sys.executable, "-m", "modelbroker"),
                 output_path: Path | None = None, directory: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = directory or config.parent
        defaults = {f"MODELBROKER_{name.upper()}": value for name, value in file_settings(self.directory).items()}
        self.log_path = output_path or self.directory / f"serve-{self.port}.out"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [*command, "serve", "--config", str(config), "--port", str(self.port)],
                cwd=cwd, env={**defaults, **env}, stdout=out, stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 20.0) -> GatewayProcess:
        """Return once /health answers; raise with the process's output if it never does."""
        if wait_healthy(self.url, self.proc, timeout):
            return self
        if self.proc.poll() is not None:
            raise AssertionError(f"the gateway exited with {self.proc.returncode}:\n{self.output()}")
        raise AssertionError(f"the gateway did not answer /health in {timeout} s:\n{self.output()}")

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully, plugins flush), then SIGKILL after 10 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    """Whether the gateway process at ``url`` answers /health within ``timeout`` s (False at
    once if it exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False


def _temporary_directory() -> Path:
    path = Path(tempfile.mkdtemp(prefix="modelbroker-test-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
