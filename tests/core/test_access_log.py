"""uvicorn's access line per request: off by default, under ``modelbroker serve`` and under
``uvicorn main:app`` alike; ``MODELBROKER_ACCESS_LOG=true`` turns it back on."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from modelbroker.testing import GatewayProcess, free_port, wait_healthy

ACCESS_LINE = '"POST /v1/chat/completions HTTP/1.1" 200'
CHAT = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}
SETTINGS = {"default": {}, "asked for": {"MODELBROKER_ACCESS_LOG": "true"}}


def answered(url: str) -> None:
    answer = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=10)
    assert answer.status_code == 200, answer.text
    # a client that puts a key in the query string: uvicorn's line, if on, leaves it out
    assert httpx.get(url + "/v1/models", params={"api_key": QUERY_KEY}, timeout=10).status_code == 200


QUERY_KEY = "mb-in-the-query-Zq7pW9"


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_modelbroker_serve(setting, write_config, provider, upstream, subprocess_env, tmp_path, repo_root):
    config = write_config({"providers": [provider("a")]})
    env = subprocess_env(MODELBROKER_LOG_FILE=str(tmp_path / "app.log"), **SETTINGS[setting])
    gateway = GatewayProcess(config, env=env, cwd=repo_root).wait_ready()
    try:
        answered(gateway.url)
    finally:
        gateway.stop()
    assert (ACCESS_LINE in gateway.output()) == (setting == "asked for"), gateway.output()
    assert ("access log is off" in gateway.output()) == (setting == "default"), gateway.output()
    assert QUERY_KEY not in gateway.output()
    assert ('"GET /v1/models?(query not logged) HTTP/1.1" 200' in gateway.output()) == (setting == "asked for")
    assert '"request_id"' in (tmp_path / "app.log").read_text()  # the attempt is on record either way


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_uvicorn_main_app(setting, write_config, provider, upstream, subprocess_env, tmp_path, repo_root):
    config = write_config({"providers": [provider("a")]})
    env = subprocess_env(MODELBROKER_CONFIG=str(config), MODELBROKER_LOG_FILE=str(tmp_path / "app.log"),
                         **SETTINGS[setting])
    port = free_port()
    output = tmp_path / "uvicorn.out"
    with output.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "uvicorn", "main:app", "--port", str(port)],
                                  cwd=repo_root, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_healthy(url, server, timeout=20), output.read_text()
        answered(url)
    finally:
        server.terminate()
        server.wait(timeout=15)
    text = output.read_text()
    assert (ACCESS_LINE in text) == (setting == "asked for"), text
    assert ("access log is off" in text) == (setting == "default"), text  # says where the lines went
    assert QUERY_KEY not in text
