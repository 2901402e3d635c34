"""core/_server/app.py and main.py: ``uvicorn main:app`` starts the gateway, or stops with one clear line."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from modelbroker._config.settings import Settings
from modelbroker._server.app import create_app
from modelbroker.testing import GatewayServer, free_port

BAD = {
    "bad-field": ('providers:\n  - {name: a, endpoint: "http://h/v1", model: m, cost_per_1k_tokens: 1, priority: top}\n',
                  "bad.yaml: providers[0].priority: must be an integer (provider 'a')"),
    "unknown-strategy": ("strategy: fastest\n", "bad.yaml: strategy: unknown strategy 'fastest'; installed strategies: "),
}


def one_clear_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("case", list(BAD))
def test_import_main_with_a_bad_config_exits_with_one_line(case, write_config, subprocess_env, repo_root):
    text, expected = BAD[case]
    config = write_config(text, name="bad.yaml")
    done = subprocess.run([sys.executable, "-c", "import main"], cwd=repo_root, capture_output=True, text=True,
                          env=subprocess_env(MODELBROKER_CONFIG=str(config)), timeout=60)
    assert one_clear_line(done).startswith(f"modelbroker: cannot start: {expected}")


def test_import_main_with_a_missing_config(tmp_path, subprocess_env, repo_root):
    missing = tmp_path / "nowhere.yaml"
    done = subprocess.run([sys.executable, "-c", "import main"], cwd=repo_root, capture_output=True, text=True,
                          env=subprocess_env(MODELBROKER_CONFIG=str(missing)), timeout=60)
    assert one_clear_line(done).startswith(f"modelbroker: cannot start: {missing}: file not found")


def test_uvicorn_main_app_with_a_bad_config(write_config, subprocess_env, repo_root):
    config = write_config(BAD["bad-field"][0], name="bad.yaml")
    done = subprocess.run([sys.executable, "-m", "uvicorn", "main:app", "--port", str(free_port())], cwd=repo_root,
                          capture_output=True, text=True, env=subprocess_env(MODELBROKER_CONFIG=str(config)), timeout=60)
    assert one_clear_line(done) == f"modelbroker: cannot start: {BAD['bad-field'][1]}"


def test_uvicorn_main_app_with_a_plugin_failing_at_startup(write_config, provider, subprocess_env, repo_root):
    """A plugin's on_startup fails (the ledger and the keys refuse a MySQL URL): uvicorn prints the
    gateway's one line, not Starlette's traceback, before its own "Application startup failed"."""
    config = write_config({"providers": [provider("a")]})
    env = subprocess_env(MODELBROKER_CONFIG=str(config), MODELBROKER_LOG_FILE="",
                         MODELBROKER_DATABASE_URL="mysql://root:hunter2@localhost/db")
    done = subprocess.run([sys.executable, "-m", "uvicorn", "main:app", "--port", str(free_port())], cwd=repo_root,
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout and "hunter2" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors[0].startswith("ERROR:    modelbroker: cannot start: plugin ")
    assert "failed in on_startup: UnsupportedDatabase: MODELBROKER_DATABASE_URL: unsupported database 'mysql'" in errors[0]
    assert errors[1:] == ["ERROR:    Application startup failed. Exiting."]


def test_import_main_with_the_shipped_config_and_no_key(subprocess_env, repo_root):
    done = subprocess.run([sys.executable, "-c", "import fastapi, main; print(isinstance(main.app, fastapi.FastAPI))"], cwd=repo_root,
                          capture_output=True, text=True, env=subprocess_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert done.stderr.count("GROQ_API_KEY") == 2  # one warning per disabled provider


def test_create_app_builds_without_starting(write_config, provider, upstream):
    app = create_app(Settings(config=write_config({"providers": [provider("a")]}), log_file=""))
    paths = set(app.openapi()["paths"])
    assert {"/generate", "/health"} <= paths
    assert upstream.calls == {}


def test_the_generation_routes_skip_fastapis_layers_and_the_rest_go_through_them(write_config, provider):
    """POST /generate and /v1/chat/completions are served by GatewayApp directly (core/_server/direct.py):
    a middleware added to the FastAPI app sees every other request, and not these two."""
    seen: list[tuple[str, str]] = []

    class Recorder:
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http":
                seen.append((scope["method"], scope["path"]))
            await self.app(scope, receive, send)

    server = GatewayServer(write_config({"providers": [provider("a")]}))
    server.app.add_middleware(Recorder)
    hello = [{"role": "user", "content": "hi"}]
    with server, httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/generate", json={"prompt": "hi"}).status_code == 200
        assert client.post("/v1/chat/completions", json={"messages": hello}).status_code == 200
        refused = client.post("/generate", json={"prompt": ""})  # the direct path's own error shape
        assert refused.status_code == 422 and refused.json()["error"]["param"] == "prompt"
        assert "x-request-id" in refused.headers
        assert client.get("/health").status_code == 200
        wrong_method = client.get("/generate")  # not a generation request: FastAPI answers
        assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    assert seen == [("GET", "/health"), ("GET", "/generate")]


@pytest.mark.parametrize("tuning", [True, False])
def test_startup_freezes_the_collector_unless_told_not_to(tuning, write_config, provider, subprocess_env, repo_root):
    """core/_server/heap.py runs in the app's lifespan (in a child process: freezing is process-wide)."""
    config = write_config({"providers": [provider("a")]})
    script = (
        "import asyncio, gc\n"
        "from modelbroker._server.app import create_app\n"
        "from modelbroker._config.settings import Settings\n"
        f"app = create_app(Settings(config={str(config)!r}, log_file='', gc_tuning={tuning},\n"
        f"                          database_url='sqlite:///{config.parent.as_posix()}/modelbroker.db'))\n"
        "async def main():\n"
        "    async with app.router.lifespan_context(app):\n"
        "        print(gc.get_freeze_count() > 0, gc.get_threshold()[0])\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=repo_root, capture_output=True, text=True,
                          env=subprocess_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    frozen, young = done.stdout.split()
    assert frozen == str(tuning)
    assert (int(young) == 10_000) is tuning
