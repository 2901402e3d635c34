"""Reloading providers.yaml without a restart: POST /admin/reload, ``modelbroker reload``
and SIGHUP. A valid file swaps in atomically (requests in flight finish on the old one);
an invalid one is refused with the message startup would give, and the old one stays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import httpx
import pytest
import yaml

from modelbroker._config.loading import load_config
from modelbroker._config.messages import ConfigError

from ._support import config, wait_until


def config_path(gw):
    return gw.server.settings.config


def rewrite(gw, data: dict | str) -> None:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    config_path(gw).write_text(text, encoding="utf-8")


def model_ids(gw) -> list[str]:
    return [m["id"] for m in gw.get("/v1/models").json()["data"]]


def test_reload_applies_a_valid_file(gateway, provider, upstream):
    gw = gateway(config(provider("a")))
    rewrite(gw, config(provider("a", priority=5), provider("b", priority=1), strategy="latency"))
    answer = gw.client.post("/admin/reload")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"reloaded": config_path(gw).name, "providers": 2, "strategy": "latency"}
    assert "b/b" in model_ids(gw)
    assert gw.get("/health").json()["strategy"] == "latency"
    assert gw.generate({"prompt": "hi"}).json()["provider"] == "b/b"


def test_reload_applies_new_reliability_numbers(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "status", "status": 503})
    gw = gateway(config(provider("a"), retries=0, failure_threshold=100))
    assert len(gw.generate({"prompt": "hi"}).json()["error"]["attempts"]) == 1
    rewrite(gw, config(provider("a"), retries=2, failure_threshold=100))
    assert gw.client.post("/admin/reload").status_code == 200
    assert len(gw.generate({"prompt": "hi"}).json()["error"]["attempts"]) == 3


@pytest.mark.parametrize(
    "text",
    [
        "providers:\n  - name: a\n    endpoint: http://127.0.0.1:1/v1\n    model: a\n    priority: high\n"
        "    cost_per_1k_tokens: 0\n",
        "providers: [\n",
        "strategy: no-such-strategy\nproviders: []\n",
        "providers:\n  - name: a\n    endpoint: http://127.0.0.1:1/v1\n    model: a\n    type: carrier-pigeon\n"
        "    cost_per_1k_tokens: 0\n",
        "reliability:\n  retries: 99\n",
    ],
    ids=["wrong-type", "bad-yaml", "unknown-strategy", "unknown-adapter", "out-of-range"],
)
def test_an_invalid_file_is_refused_and_the_old_one_stays(gateway, provider, upstream, text):
    gw = gateway(config(provider("a")))
    rewrite(gw, text)
    answer = gw.client.post("/admin/reload")
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_config"
    assert error["message"].startswith("reload refused, the running configuration is unchanged: ")
    assert config_path(gw).name in error["message"]
    try:  # the message is the one startup gives, where startup can tell (the YAML and the fields)
        load_config(config_path(gw))
    except ConfigError as exc:
        assert str(exc) in error["message"]
    assert gw.generate({"prompt": "still"}).json()["provider"] == "a/a"
    assert model_ids(gw)[0] == "a/a"


def test_in_flight_requests_finish_on_the_old_configuration(gateway, provider, upstream):
    upstream.set_behavior("old", {"kind": "ok", "delay_s": 0.6})
    gw = gateway(config(provider("old")))
    result = {}

    def slow_request() -> None:
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            result["answer"] = client.post("/generate", json={"prompt": "in flight"})

    worker = threading.Thread(target=slow_request)
    worker.start()
    assert wait_until(lambda: upstream.calls["old"] == 1, timeout=3)
    rewrite(gw, config(provider("new")))
    assert gw.client.post("/admin/reload").status_code == 200
    assert gw.generate({"prompt": "after"}).json()["provider"] == "new/new"
    worker.join(5)
    assert result["answer"].status_code == 200
    assert result["answer"].json()["provider"] == "old/old"
    assert "old/old" not in model_ids(gw)


def test_health_is_kept_for_providers_that_stay(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "status", "status": 401})
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), cooldown_s=30))
    gw.generate({"prompt": "hi"})
    rewrite(gw, config(provider("a", priority=1), provider("b", priority=2), provider("c", priority=3),
                       cooldown_s=30))
    assert gw.client.post("/admin/reload").status_code == 200
    states = {p["id"]: p["state"] for p in gw.get("/health").json()["providers"]}
    assert states == {"a/a": "cooling_down", "b/b": "healthy", "c/c": "healthy"}


def cli_reload(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelbroker", "reload", "--url", url], capture_output=True,
                          text=True, timeout=30, env={k: v for k, v in os.environ.items()
                                                       if not k.startswith("MODELBROKER_")})


def test_modelbroker_reload_command(gateway, provider, upstream):
    gw = gateway(config(provider("a")))
    rewrite(gw, config(provider("a"), provider("b")))
    done = cli_reload(gw.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"reloaded {config_path(gw).name}: 2 providers, strategy 'priority'"
    rewrite(gw, "providers: [\n")
    done = cli_reload(gw.url)
    assert done.returncode == 1
    assert "reload refused, the running configuration is unchanged" in done.stderr
    assert "not valid YAML" in done.stderr
    assert "b/b" in model_ids(gw)


def test_modelbroker_reload_without_a_gateway(closed_port_url):
    done = cli_reload(closed_port_url.split("/v1")[0])
    assert done.returncode == 1
    assert "cannot reach the gateway" in done.stderr


def test_modelbroker_reload_with_a_path_in_the_url_says_to_drop_it(gateway, provider, upstream):
    gw = gateway(config(provider("a")))
    done = cli_reload(gw.url + "/v1")
    assert done.returncode == 1
    assert done.stderr.strip() == (f"modelbroker: Not Found; {gw.url}/v1/admin/reload is not a gateway's reload "
                                   "route: give --url the gateway's address, with no path")


def test_modelbroker_reload_against_something_else_says_so(closed_port_url):
    """Not a gateway (a server answering 501 in HTML), an address with a password in it, a
    port that is not one: one line each, no traceback, no password."""
    import http.server
    import threading

    other = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # 501 to a POST
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        done = cli_reload(f"http://127.0.0.1:{other.server_port}")
    finally:
        other.shutdown()
        other.server_close()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"http://127.0.0.1:{other.server_port}/admin/reload answered 501, not as a modelbroker gateway does" \
        in done.stderr
    closed = closed_port_url.split("/v1")[0]
    for url in (closed.replace("//", "//admin:Zq7pW9secret@"), closed.replace("//", "//admin:Zq7pW9/x#secret@"),
                "http://127.0.0.1:port"):
        done = cli_reload(url)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("modelbroker: cannot reach the gateway at "), done.stderr
        assert "Zq7pW9" not in done.stderr


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_reloads_the_serving_process(tmp_path, provider, upstream, gateway_process, subprocess_env):
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump(config(provider("a"))), encoding="utf-8")
    process = gateway_process(path, subprocess_env(MODELBROKER_LOG_FILE=str(tmp_path / "app.log")))

    def ids() -> list[str]:
        return [m["id"] for m in httpx.get(process.url + "/v1/models", timeout=5).json()["data"]]

    path.write_text(yaml.safe_dump(config(provider("a"), provider("b"))), encoding="utf-8")
    process.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "b/b" in ids(), timeout=5), process.output()

    path.write_text("providers: [\n", encoding="utf-8")
    process.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "reload refused" in process.output(), timeout=5), process.output()
    assert "not valid YAML" in process.output()
    assert "b/b" in ids()
    assert process.proc.poll() is None
    answer = httpx.post(process.url + "/generate", json={"prompt": "hi"}, timeout=5)
    assert answer.status_code == 200
