"""What the ``gateway`` fixture gives: a started gateway with an httpx client, stopped at teardown."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from modelbroker.testing._servers import GatewayServer

#: Every HTTP call a RunningGateway's client makes is bounded by this (seconds).
HTTP_TIMEOUT = 10.0


def config_text(config: str | Mapping[str, Any]) -> str:
    """YAML text for a providers.yaml given as text (dedented) or as a mapping."""
    if isinstance(config, str):
        return textwrap.dedent(config)
    return yaml.safe_dump(dict(config), sort_keys=False)


class RunningGateway:
    """A started ``GatewayServer``, with an httpx client on its URL and its app.log."""

    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.url = server.url
        self.log_file = server.log_file
        self.client = httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT)
        self.responses: list[httpx.Response] = []
        self._stopped = False

    @property
    def gateway(self):
        """The running gateway (``modelbroker.GatewayView``): its config, health, plugins."""
        return self.server.gateway

    @property
    def config_path(self) -> Path:
        """Its providers.yaml: change it, then ``post("/admin/reload")`` to apply the change."""
        return self.server.settings.config

    def generate(self, body: Any = None, *, content: bytes | str | None = None, **kwargs: Any) -> httpx.Response:
        """POST /generate with ``body`` as JSON, or raw ``content``; every response is kept."""
        if content is not None:
            kwargs.setdefault("headers", {"content-type": "application/json"})
            return self._kept(self.client.post("/generate", content=content, **kwargs))
        return self._kept(self.client.post("/generate", json=body, **kwargs))

    def chat(self, messages: list[dict[str, Any]] | str, **fields: Any) -> httpx.Response:
        """POST /v1/chat/completions; ``messages`` may be one user message's text."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self._kept(self.client.post("/v1/chat/completions", json={"messages": messages, **fields}))

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._kept(self.client.post(path, **kwargs))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._kept(self.client.get(path, **kwargs))

    def stop(self) -> None:
        """Shut the gateway down as on SIGTERM; the plugins flush app.log. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.client.close()
        self.server.stop()

    def log_lines(self) -> list[dict[str, Any]]:
        """Stop the gateway (a full flush), then return app.log's lines as dicts."""
        self.stop()
        assert self.log_file is not None, "this gateway was started without a log file"
        assert self.log_file.exists(), f"{self.log_file} was not written"
        return self.server.log_lines()

    def _kept(self, response: httpx.Response) -> httpx.Response:
        self.responses.append(response)
        return response


class GatewayFactory:
    """Starts gateways whose files live in ``directory`` (each its own folder); ``close()`` stops them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[RunningGateway] = []

    def __call__(self, config: str | Mapping[str, Any], *, log: bool | str | Path = True,
                 plugins: Mapping[str, object] | None = None, load_installed: bool = True,
                 pm: Any = None, **settings: Any) -> RunningGateway:
        number = len(self.started)
        path = self.directory / f"providers-{number}.yaml"
        path.write_text(config_text(config), encoding="utf-8")
        own = self.directory / f"gateway-{number}"
        own.mkdir()
        if log is not True:
            settings["log_file"] = str(log) if log else ""
        elif number == 0:
            settings.setdefault("log_file", str(self.directory / "app.log"))
        server = GatewayServer(path, directory=own, plugins=plugins, load_installed=load_installed, pm=pm,
                               **settings)
        running = RunningGateway(server.start())
        self.started.append(running)
        return running

    def close(self) -> None:
        for running in self.started:
            running.stop()
