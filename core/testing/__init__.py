"""Run a real gateway on loopback, for this project's tests and for plugin authors' tests.

    with GatewayServer(config_path, log_file=tmp / "app.log") as gw:
        httpx.post(gw.url + "/generate", json={"prompt": "hi"})

The server is uvicorn in a background thread, listening on a free port on
127.0.0.1: requests cross a real socket, exactly as in production.
``GatewayProcess`` runs ``modelbroker serve`` in a fresh interpreter instead, for a
test that needs its own process (a plugin installed on ``PYTHONPATH``, several replicas).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from modelbroker._config.settings import Settings
from modelbroker._server.app import create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GatewayServer:
    """A gateway for ``config`` served by uvicorn in a thread; ``url`` is its base URL."""

    def __init__(self, config: str | Path, *, log_file: str | Path = "", pm: Any = None, **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # gc_tuning off: this gateway shares the test process, whose collector it must not freeze.
        settings = {"gc_tuning": False, **settings}
        self.settings = Settings(config=Path(config), log_file=str(log_file), port=self.port, **settings)
        self.app = create_app(self.settings, pm)
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self._thread = threading.Thread(target=self._server.run, name="gateway-server", daemon=True)

    @property
    def gateway(self):
        return self.app.state.gateway

    def start(self, timeout: float = 10.0) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start; see the log above")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down as on SIGTERM: in-flight requests finish, plugins flush."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GatewayProcess:
    """``modelbroker serve --config config`` in a subprocess on a free port; ``url`` is its base URL.

    ``env`` is the child's whole environment; its output goes to ``output_path``
    (default: beside ``config``), which ``output()`` reads back.
    """

    def __init__(self, config: Path, *, env: dict[str, str], cwd: Path | None = None,
                 command: Sequence[str] = (sys.executable, "-m", "modelbroker"),
                 output_path: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = output_path or config.parent / f"serve-{self.port}.out"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [*command, "serve", "--config", str(config), "--port", str(self.port)],
                cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
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
