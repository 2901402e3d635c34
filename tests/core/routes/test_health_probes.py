"""core/_server/routes/health.py: GET /health/live and /health/ready, the probes of an
orchestrator or a load balancer; open without a key, like /health."""

from __future__ import annotations

import os
import socket
import time

import httpx
import pytest

from modelbroker import APIError, ConfigError, MemoryState, hookimpl
from modelbroker._config.settings import Settings
from modelbroker._routing.gateway import Gateway
from modelbroker._server.app import create_app
from modelbroker.testing import free_port

REDIS_URL = os.environ.get("MODELBROKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class RefuseEveryone:
    """An ``authenticate`` that refuses every request it is asked about, as a gateway with keys
    refuses a request without one."""

    @hookimpl
    def authenticate(self, path):
        raise APIError(401, f"{path}: no key", code="missing_key")


class BrokenStatus(MemoryState):
    def status(self) -> dict:
        raise RuntimeError("the store lost its mind")


class BrokenStore:
    @hookimpl
    def state_store(self):
        return BrokenStatus()


class Readiness:
    """A plugin object answering the ``readiness`` hook with ``answer`` (or raising it)."""

    def __init__(self, answer):
        self.answer = answer

    @hookimpl
    def readiness(self):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class ClaimsReady:
    """A surface that wants /health/ready for itself."""

    @hookimpl
    def register_surfaces(self, register):
        class Ready:
            paths = ("/health/ready",)

            def parse(self, body, incoming): ...

            def answer(self, request, routed): ...

            def stream(self, request, routed): ...

            def error(self, error): ...

        register("ready", Ready)


def test_live_and_ready_answer_on_a_started_gateway(gateway, provider):
    gw = gateway({"providers": [provider("a"), provider("b", enabled=False)]}, log=False)
    live = gw.get("/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = gw.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {
        "config": {"ok": True, "providers": 2, "enabled": 1},
        "started": {"ok": True},
        "state": {"ok": True, "backend": "memory", "shared": False},
        "keys.guard": {"ok": True, "enforcing": False, "table_current": True},
    }}


def test_the_probes_need_no_key_where_every_other_route_does(gateway, provider):
    gw = gateway({"providers": [provider("a")]}, plugins={"refuse": RefuseEveryone()}, log=False)
    assert gw.get("/v1/models").status_code == 401
    assert gw.get("/metrics").status_code == 401
    for path in ("/health", "/health/live", "/health/ready"):
        assert gw.get(path).status_code == 200, path


async def test_ready_is_503_naming_the_checks_until_the_gateway_has_started(write_config):
    """Served before the lifespan ran (no transport serves so, but an ASGI test client can):
    the plugins have not started and there is no state store yet."""
    config = write_config("providers:\n  - {name: a, endpoint: 'http://127.0.0.1:9/v1/chat/completions', "
                          "model: a, cost_per_1k_tokens: 0}\n")
    app = create_app(Settings(config=config, log_file=""))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        live = await client.get("/health/live")
        ready = await client.get("/health/ready")
    assert live.status_code == 200
    assert ready.status_code == 503
    body = ready.json()
    assert (body["status"], body["failing"]) == ("not_ready", ["started", "state"])
    assert body["checks"]["config"]["ok"] is True
    assert "on_startup" in body["checks"]["started"]["error"]


def test_ready_is_503_when_the_state_store_cannot_say_how_it_is(gateway, provider):
    gw = gateway({"providers": [provider("a")]}, plugins={"broken": BrokenStore()}, log=False)
    ready = gw.get("/health/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["failing"] == ["state"]
    assert body["checks"]["state"] == {
        "ok": False, "error": "the shared-state store's status() failed: RuntimeError: the store lost its mind"}
    assert gw.get("/health/live").status_code == 200  # liveness asks nothing of the store


def test_no_surface_may_take_a_probe_path(write_config):
    config = write_config("providers:\n  - {name: a, endpoint: 'http://127.0.0.1:9/v1/chat/completions', "
                          "model: a, cost_per_1k_tokens: 0}\n")
    with pytest.raises(ConfigError, match="path '/health/ready' is the gateway's own"):
        Gateway.from_settings(Settings(config=config, log_file=""), plugins={"mine": ClaimsReady()})


# --- with Redis ------------------------------------------------------------------------------


def _reachable(url: str) -> bool:
    host, _, port = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1].partition(":")
    try:
        with socket.create_connection((host, int(port or 6379)), timeout=0.5):
            return True
    except OSError:
        return False


def test_ready_with_redis_shared(gateway, provider):
    if not _reachable(REDIS_URL):
        if os.environ.get("MODELBROKER_TEST_REDIS_URL") or os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is unreachable; CI needs it (start redis-server)")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable; set MODELBROKER_TEST_REDIS_URL to test it")
    gw = gateway({"providers": [provider("a")]}, log=False, redis_url=REDIS_URL)
    ready = gw.get("/health/ready")
    assert ready.status_code == 200, ready.text
    state = ready.json()["checks"]["state"]
    assert (state["ok"], state["backend"], state["shared"]) == (True, "redis", True)


def test_ready_while_redis_is_away_and_the_state_is_local(gateway, provider):
    """Redis unreachable is the store's documented fallback (in-process state, logged, shown):
    the replica still serves, so it stays ready and says that it does not share."""
    gw = gateway({"providers": [provider("a")]}, log=False, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert gw.generate({"prompt": "hi"}).status_code == 200
    deadline = time.monotonic() + 10
    while True:  # the replica finds Redis away at its next call to it (cooldowns are read every second)
        ready = gw.get("/health/ready")
        if not ready.json()["checks"]["state"]["shared"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ready.status_code == 200, ready.text
    state = ready.json()["checks"]["state"]
    assert (state["ok"], state["backend"], state["shared"]) == (True, "redis", False)
    assert "local to this replica" in state["note"]


def test_hook_readiness(gateway, provider):
    """Each plugin's answer is a check named after it; one not ok, one raising and one answering
    nonsense each make the replica unready, and a plugin with nothing to say (None) adds no check."""
    plugins = {"fine": Readiness({"ok": True, "queued": 3}), "silent": Readiness(None)}
    gw = gateway({"providers": [provider("a")]}, plugins=plugins, log=False)
    ready = gw.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["fine"] == {"ok": True, "queued": 3}
    assert "silent" not in ready.json()["checks"]

    plugins = {"fine": Readiness({"ok": True}), "down": Readiness({"ok": False, "error": "the disk is full"}),
               "raises": Readiness(RuntimeError("secret-ish detail")), "odd": Readiness({"status": "meh"})}
    gw = gateway({"providers": [provider("a")]}, plugins=plugins, log=False)
    ready = gw.get("/health/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert sorted(body["failing"]) == ["down", "odd", "raises"]
    assert body["checks"]["down"] == {"ok": False, "error": "the disk is full"}
    assert body["checks"]["raises"] == {"ok": False, "error": "its readiness hook failed: RuntimeError"}
    assert "secret-ish" not in ready.text
    assert "bool 'ok'" in body["checks"]["odd"]["error"]
