"""``modelbroker demo``: the gateway, offline, in front of the project's fake upstream.

The demo config has three providers on one fake upstream. The first one's model
always fails with a 500, so the first requests show a fallback (app.log gets the
failed attempts and the successful one); after three failures the provider
cools down and requests go straight to the backup until its trial request.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from modelbroker._config.settings import Settings
from modelbroker.fake_upstream import FakeUpstream

DEMO_CONFIG = """\
# Written by `modelbroker demo`. Every endpoint is the local fake upstream.
strategy: priority
providers:
  - name: flaky-primary
    endpoint: "{url}"
    model: fail-500          # the fake upstream answers 500 for this model
    priority: 1
    cost_per_1k_tokens: 0.001
    api_key: "demo-key-not-secret"
  - name: steady-backup
    endpoint: "{url}"
    model: demo-small
    priority: 2
    cost_per_1k_tokens: 0.002
    api_key: "demo-key-not-secret"
  - name: premium
    endpoint: "{url}"
    model: demo-large
    priority: 3
    cost_per_1k_input_tokens: 0.005
    cost_per_1k_output_tokens: 0.015
    api_key: "demo-key-not-secret"
"""


def write_demo_config(directory: Path, upstream_url: str) -> Path:
    path = directory / "providers.demo.yaml"
    path.write_text(DEMO_CONFIG.format(url=upstream_url), encoding="utf-8")
    return path


def run_demo(settings: Settings) -> int:
    """Claim the port, start the fake upstream, then serve the gateway until Ctrl-C. The banner
    comes once the gateway is up; a port in use stops it first, having written nothing."""
    import uvicorn

    from modelbroker._cli.serve import claim_port, run_on
    from modelbroker._server.app import create_app

    sock = claim_port(settings.host, settings.port)
    with FakeUpstream() as upstream, tempfile.TemporaryDirectory(prefix="modelbroker-demo-") as tmp:
        config = write_demo_config(Path(tmp), upstream.chat_url)
        settings = settings.model_copy(update={"config": config})
        try:
            app = create_app(settings)
        except BaseException:
            sock.close()
            raise
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        base = f"http://{host}:{sock.getsockname()[1]}"
        server = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                timeout_graceful_shutdown=settings.graceful_shutdown_s)
        return run_on(sock, server, lambda: print(_banner(base, upstream.url, settings), flush=True))


def _banner(base: str, upstream_url: str, settings: Settings) -> str:
    return f"""
modelbroker demo: the gateway on {base}, a fake upstream on {upstream_url}.
Providers: flaky-primary (always fails with 500), steady-backup, premium.

Try it from another terminal:
  curl -s {base}/generate -H 'content-type: application/json' -d '{{"prompt": "Hello"}}'
  curl -s {base}/generate -H 'content-type: application/json' -d '{{"prompt": "Hello", "strategy": "cost"}}'
  curl -s {base}/health

Each attempt is a JSON line in {settings.log_file}. Ctrl-C stops the demo.
"""
