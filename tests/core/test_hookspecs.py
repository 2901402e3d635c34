"""core/hookspecs.py: each hook, exercised by a plugin registered in a real gateway.

The plugin manager is built with ``make_plugin_manager(load_entrypoints=False)`` and
the built-in plugins registered by hand, plus the test's own plugin; the gateway then
runs on loopback in front of the fake upstream. tests/test_meta.py checks that every
hook has a ``test_hook_<name>`` here.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi import APIRouter, Request

from modelbroker._config.messages import ConfigError
from modelbroker._config.settings import Settings
from modelbroker._plugins.hookcall import PluginError
from modelbroker._plugins.manager import make_plugin_manager
from modelbroker._routing.gateway import Gateway
from modelbroker._routing.types import Completion, Usage
from modelbroker.hookspecs import hookimpl
from modelbroker.plugins import cost, file_log, openai_http, priority

BUILTINS = {
    "priority": priority,
    "cost": cost,
    "openai": openai_http,
    "file_log": file_log,
}
NO_RETRY = {"retries": 0}


def make_pm(**extra):
    """A plugin manager with the built-in plugins and ``extra`` (name -> plugin object)."""
    pm = make_plugin_manager(load_entrypoints=False)
    for name, plugin in {**BUILTINS, **extra}.items():
        pm.register(plugin, name=name)
    return pm


def ids(providers) -> list[str]:
    return [p.id for p in providers]


# --- discovery ----------------------------------------------------------------------------


class Reverse:
    """Strategy ``reverse``: the providers in reverse file order."""

    @hookimpl
    def strategy_names(self):
        return ["reverse"]

    @hookimpl
    def select_provider(self, providers, strategy):
        if strategy != "reverse":
            return None
        return list(reversed(providers))


def test_hook_strategy_names(gateway, provider, upstream, write_config):
    config = {"strategy": "reverse", "providers": [provider("a"), provider("b"), provider("c")]}
    with pytest.raises(ConfigError, match=r"unknown strategy 'reverse'; installed strategies: cost, priority$"):
        Gateway.from_settings(Settings(config=write_config(config), log_file=""), make_pm())

    gw = gateway(config, pm=make_pm(reverse=Reverse()))
    assert gw.gateway.strategies == ["cost", "priority", "reverse"]
    assert gw.generate({"prompt": "hi"}).json()["provider"] == "c/c"
    assert gw.generate({"prompt": "hi", "strategy": "priority"}).json()["provider"] == "a/a"


class EchoAdapter:
    """Adapter ``type: echo``: answers in-process, with fixed token counts."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def adapter_types(self):
        return ["echo"]

    @hookimpl
    def call_provider(self, provider, request):
        if provider.type != "echo":
            return None
        self.calls.append(provider.id)
        return self._answer(provider, request)

    async def _answer(self, provider, request):
        return Completion(text=f"echo: {request.prompt_text()}", model=provider.model, usage=Usage(3, 4, 7))


def test_hook_adapter_types(gateway, provider, upstream, write_config):
    echo_entry = {"name": "local", "type": "echo", "endpoint": "http://echo.invalid/", "model": "parrot",
                  "cost_per_1k_tokens": 2.0, "priority": 1}
    config = {"providers": [echo_entry, provider("remote", priority=2)]}
    with pytest.raises(ConfigError) as caught:
        Gateway.from_settings(Settings(config=write_config(config), log_file=""), make_pm())
    assert "no installed adapter handles type 'echo'" in str(caught.value)
    assert str(caught.value).endswith("installed adapter types: openai")

    adapter = EchoAdapter()
    gw = gateway(config, pm=make_pm(echo=adapter))
    assert gw.gateway.adapter_types == ["echo", "openai"]
    body = gw.generate({"prompt": "polly"}).json()
    assert (body["provider"], body["response"], body["tokens"]) == ("local/parrot", "echo: polly", 7)
    assert body["cost"] == pytest.approx(7 * 2.0 / 1000)
    assert adapter.calls == ["local/parrot"]
    assert upstream.calls == {}


class Routes:
    """A plugin with its own endpoint, reading the gateway's state."""

    @hookimpl
    def api_routes(self):
        router = APIRouter()

        @router.get("/sample/providers")
        async def providers(request: Request):
            return {"ids": [p.id for p in request.app.state.gateway.config.providers]}

        return [router]


def test_hook_api_routes(gateway, provider, upstream):
    gw = gateway({"providers": [provider("a"), provider("b")]}, pm=make_pm(routes=Routes()))
    answer = gw.get("/sample/providers")
    assert answer.status_code == 200
    assert answer.json() == {"ids": ["a/a", "b/b"]}
    assert gw.generate({"prompt": "hi"}).status_code == 200

    plain = gateway({"providers": [provider("a")]}, pm=make_pm())
    assert plain.get("/sample/providers").status_code == 404


# --- lifecycle ----------------------------------------------------------------------------


class Lifecycle:
    def __init__(self, name: str, *, fail_startup: bool = False, fail_shutdown: bool = False) -> None:
        self.name = name
        self.fail_startup = fail_startup
        self.fail_shutdown = fail_shutdown
        self.events: list[str] = []
        self.seen: dict = {}

    @hookimpl
    def on_startup(self, pm, settings, config, client):
        self.seen = {"pm": pm, "settings": settings, "config": config, "client": client}
        if self.fail_startup:
            raise RuntimeError("cannot open the ledger")
        return self._started()

    async def _started(self):
        await asyncio.sleep(0)
        self.events.append("started")

    @hookimpl
    def on_shutdown(self):
        if self.fail_shutdown:
            raise RuntimeError("ledger already closed")
        return self._stopped()

    async def _stopped(self):
        await asyncio.sleep(0)
        self.events.append("stopped")


async def test_hook_on_startup(write_config, provider, upstream):
    config = {"providers": [provider("a")], "plugins": {"ledger": {"path": "/tmp/x"}}}
    settings = Settings(config=write_config(config), log_file="")
    plugin = Lifecycle("ledger")
    pm = make_pm(ledger=plugin)
    gateway = Gateway.from_settings(settings, pm)
    await gateway.start()
    try:
        assert plugin.events == ["started"]  # the returned awaitable was awaited
        assert plugin.seen["pm"] is pm
        assert plugin.seen["settings"] is settings
        assert plugin.seen["config"].plugins.settings_for("ledger") == {"path": "/tmp/x"}
        assert isinstance(plugin.seen["client"], httpx.AsyncClient)
    finally:
        await gateway.stop()

    broken = Gateway.from_settings(settings, make_pm(ledger=Lifecycle("ledger", fail_startup=True)))
    with pytest.raises(PluginError) as caught:
        await broken.start()
    assert caught.value.plugin == "ledger"
    assert "plugin 'ledger' failed in on_startup: RuntimeError: cannot open the ledger" in str(caught.value)


def test_hook_on_shutdown(gateway, provider, upstream, caplog):
    good = Lifecycle("good")
    pm = make_pm(bad=Lifecycle("bad", fail_shutdown=True), good=good)
    gw = gateway({"providers": [provider("a")]}, pm=pm)
    gw.generate({"prompt": "hi"})
    with caplog.at_level(logging.ERROR, logger="modelbroker"):
        lines = gw.log_lines()
    assert good.events == ["started", "stopped"]  # ran although another on_shutdown raised
    assert len(lines) == 1  # and file_log still flushed
    assert any("'bad'" in r.getMessage() and "on_shutdown" in r.getMessage() for r in caplog.records)


# --- one request --------------------------------------------------------------------------


class ReversePriority:
    """Answers for the built-in strategy name ``priority``, with the opposite order."""

    @hookimpl
    def select_provider(self, providers, strategy):
        if strategy != "priority":
            return None
        return sorted(providers, key=lambda p: -p.priority)


def test_hook_select_provider(gateway, provider, upstream):
    config = {"reliability": NO_RETRY, "providers": [provider("first", priority=1), provider("second", priority=2)]}
    plain = gateway(config, pm=make_pm())
    assert plain.generate({"prompt": "hi"}).json()["provider"] == "first/first"

    gw = gateway(config, pm=make_pm(override=ReversePriority()))
    assert gw.generate({"prompt": "hi"}).json()["provider"] == "second/second"
    upstream.set_behavior("*", {"kind": "status", "status": 500})
    attempts = gw.generate({"prompt": "hi"}).json()["error"]["attempts"]
    assert [a["provider"] for a in attempts] == ["second/second", "first/first"]


class SubsetStrategy:
    @hookimpl
    def strategy_names(self):
        return ["only-b", "none"]

    @hookimpl
    def select_provider(self, providers, strategy):
        if strategy == "only-b":
            return [p for p in providers if p.name == "b"]
        if strategy == "none":
            return []
        return None


def test_hook_select_provider_may_return_a_subset(gateway, provider, upstream):
    gw = gateway({"reliability": NO_RETRY, "providers": [provider("a"), provider("b")]},
                 pm=make_pm(subset=SubsetStrategy()))
    upstream.set_behavior("*", {"kind": "status", "status": 500})
    attempts = gw.generate({"prompt": "hi", "strategy": "only-b"}).json()["error"]["attempts"]
    assert [a["provider"] for a in attempts] == ["b/b"]
    assert gw.generate({"prompt": "hi", "strategy": "none"}).status_code == 503


class RaisingStrategy:
    @hookimpl
    def select_provider(self, strategy):
        raise ZeroDivisionError("bug in the strategy")


def test_hook_select_provider_raising_fails_the_request_clearly(gateway, provider, upstream, caplog):
    gw = gateway({"providers": [provider("a")]}, pm=make_pm(buggy=RaisingStrategy()))
    with caplog.at_level(logging.ERROR):
        answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 500
    assert set(answer.json()["error"]) >= {"message", "type", "code"}
    assert upstream.calls == {}
    assert any("buggy" in (r.getMessage() + str(r.exc_info and r.exc_info[1])) for r in caplog.records)


class BrokenAdapter:
    """Claims the providers named ``broken``, and fails on them (``when`` says how)."""

    def __init__(self, when: str) -> None:
        self.when = when

    @hookimpl
    def call_provider(self, provider):
        if provider.name != "broken":
            return None
        if self.when == "at-once":
            raise KeyError("api_version")
        if self.when == "wrong-answer":
            return self._dict()
        return self._fail()

    async def _fail(self):
        raise ValueError("cannot build the request")

    async def _dict(self):
        return {"choices": [{"message": {"content": "not a Completion"}}]}


@pytest.mark.parametrize("when", ["at-once", "awaited", "wrong-answer"])
def test_hook_call_provider(gateway, provider, upstream, when):
    gw = gateway({"reliability": NO_RETRY, "providers": [provider("broken", priority=1), provider("fine", priority=2)]},
                 pm=make_pm(brittle=BrokenAdapter(when)))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "fine/fine"
    assert dict(upstream.calls) == {"fine": 1}  # the broken plugin claimed its provider: openai never ran
    failed, ok = gw.log_lines()
    assert failed["provider"] == "broken" and failed["error_kind"] == "plugin_error"
    if when == "wrong-answer":
        assert "plugin 'brittle' answered call_provider with a dict; expected a Completion" in failed["error"]
    else:
        assert "plugin 'brittle' failed in call_provider" in failed["error"]
        assert ("KeyError" if when == "at-once" else "ValueError") in failed["error"]
    assert ok["success"] is True


class Recorder:
    def __init__(self) -> None:
        self.results: list[tuple] = []
        self.failures: list[tuple] = []
        self.rejected: list[dict] = []

    @hookimpl
    def on_result(self, provider, request, result, elapsed_ms, attempt):
        self.results.append((provider.id, request.request_id, result.text, result.cost, result.usage, attempt, elapsed_ms))

    @hookimpl
    def on_failure(self, provider, request, error, elapsed_ms, attempt):
        self.failures.append((provider.id, request.request_id, error.kind.value, error.status, attempt, elapsed_ms))

    @hookimpl
    def on_rejected(self, request, request_id, route, status, reason):
        self.rejected.append({"request": request, "request_id": request_id, "route": route,
                              "status": status, "reason": reason})


class Raising:
    @hookimpl
    def on_result(self):
        raise RuntimeError("metrics backend down")

    @hookimpl
    def on_failure(self):
        raise RuntimeError("metrics backend down")

    @hookimpl
    def on_rejected(self):
        raise RuntimeError("metrics backend down")


def test_hook_on_result(gateway, provider, upstream, caplog):
    recorder = Recorder()
    gw = gateway({"providers": [provider("a", cost_per_1k_tokens=1.0)]},
                 pm=make_pm(recorder=recorder, noisy=Raising()))
    with caplog.at_level(logging.ERROR, logger="modelbroker"):
        answer = gw.generate({"prompt": "one two"}, headers={"x-request-id": "rid-result"})
    assert answer.status_code == 200  # a plugin raising in on_result is contained
    ((pid, rid, text, cost, usage, attempt, elapsed),) = recorder.results
    assert (pid, rid, text, attempt) == ("a/a", "rid-result", answer.json()["response"], 1)
    assert usage.total_tokens == answer.json()["tokens"] > 0
    assert cost == pytest.approx(usage.total_tokens * 1.0 / 1000)  # filled in before on_result
    assert elapsed >= 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("'noisy'" in m and "on_result" in m for m in messages), messages
    assert len(gw.log_lines()) == 1  # file_log, registered before, still ran


def test_hook_on_failure(gateway, provider, upstream, caplog):
    recorder = Recorder()
    gw = gateway({"reliability": NO_RETRY, "providers": [provider("down", model="fail-503", priority=1),
                                                         provider("up", priority=2)]},
                 pm=make_pm(recorder=recorder, noisy=Raising()))
    with caplog.at_level(logging.ERROR, logger="modelbroker"):
        answer = gw.generate({"prompt": "hi"}, headers={"x-request-id": "rid-failure"})
    assert answer.status_code == 200
    (failure,) = recorder.failures
    assert failure[:5] == ("down/fail-503", "rid-failure", "status", 503, 1)
    assert [r[5] for r in recorder.results] == [2]
    assert any("'noisy'" in r.getMessage() and "on_failure" in r.getMessage() for r in caplog.records)


def test_hook_on_rejected(gateway, provider, upstream):
    recorder = Recorder()
    gw = gateway({"providers": [provider("a")]}, pm=make_pm(noisy=Raising(), recorder=recorder))
    bad_json = gw.generate(content="{not json", headers={"x-request-id": "rid-bad-json",
                                                        "content-type": "application/json"})
    unknown = gw.generate({"prompt": "hi", "strategy": "fastest"}, headers={"x-request-id": "rid-strategy"})
    assert (bad_json.status_code, unknown.status_code) == (400, 400)
    ok = gw.generate({"prompt": "hi"})
    assert ok.status_code == 200
    assert [(r["request_id"], r["route"], r["status"]) for r in recorder.rejected] == [
        ("rid-bad-json", "/generate", 400),
        ("rid-strategy", "/generate", 400),
    ]
    assert recorder.rejected[0]["request"] is None
    assert recorder.rejected[0]["reason"] == bad_json.json()["error"]["message"]
    assert "unknown strategy 'fastest'" in recorder.rejected[1]["reason"]


class SlowAdmission:
    """Admits every request after 50 ms (a pacing plugin's wait, say)."""

    @hookimpl
    def admit(self, request, principal):
        return asyncio.sleep(0.05)


def test_a_deadline_passed_before_any_attempt_is_a_rejection(gateway, provider, upstream):
    """No provider was tried, so no on_result/on_failure: the 504 goes to on_rejected, and
    its message says that nothing was tried."""
    recorder = Recorder()
    gw = gateway({"providers": [provider("a")]}, pm=make_pm(slow=SlowAdmission(), recorder=recorder))
    answer = gw.generate({"prompt": "hi"}, headers={"x-request-id": "rid-late", "x-modelbroker-timeout": "0.01"})
    assert answer.status_code == 504, answer.text
    error = answer.json()["error"]
    assert error["code"] == "deadline_exceeded" and error["attempts"] == []
    assert error["message"] == "the request deadline passed before any provider was tried"
    assert (recorder.results, recorder.failures) == ([], [])
    assert [(r["request_id"], r["status"], r["reason"]) for r in recorder.rejected] == [
        ("rid-late", 504, error["message"])]
    assert recorder.rejected[0]["request"].request_id == "rid-late"
    assert upstream.calls == {}


def test_hook_register_commands(tmp_path):
    """A plugin's subcommand appears in `modelbroker --help` and runs (the ledger's `usage`)."""
    import subprocess
    import sys

    help_text = subprocess.run([sys.executable, "-m", "modelbroker", "--help"], capture_output=True, text=True,
                               timeout=60, cwd=tmp_path).stdout
    assert "usage     requests, tokens, cost and latency" in help_text
    ran = subprocess.run([sys.executable, "-m", "modelbroker", "usage"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert ran.returncode == 2
    assert "no ledger at" in ran.stderr and "Traceback" not in ran.stderr


async def test_hook_state_store(tmp_path):
    """The first store a plugin offers is the gateway's; with none, state stays in the process."""
    from modelbroker._config.settings import Settings
    from modelbroker._plugins.manager import make_plugin_manager
    from modelbroker._routing.gateway import Gateway
    from modelbroker._routing.state import MemoryState
    from modelbroker.hookspecs import hookimpl
    from modelbroker.plugins import openai_http, priority

    config = tmp_path / "providers.yaml"
    config.write_text("providers: []\n")

    class Offered(MemoryState):
        pass

    class Offering:
        @hookimpl
        def state_store(self, settings):
            return Offered() if settings.redis_url == "offer://" else None

    for redis_url, expected in (("offer://", Offered), ("", MemoryState)):
        pm = make_plugin_manager(load_entrypoints=False)
        for plugin in (priority, openai_http, Offering()):
            pm.register(plugin)
        gateway = Gateway(Settings(config=config, log_file="", redis_url=redis_url), _config(config), pm)
        await gateway.start()
        try:
            assert type(gateway.state) is expected
        finally:
            await gateway.stop()


def _config(path):
    from modelbroker._config.loading import load_config

    return load_config(path)


class _KeyCheck:
    """authenticate and admit as a plugin: one key, and model "premium" only with it."""

    def __init__(self):
        from modelbroker._routing.errors import APIError
        from modelbroker._routing.types import Principal
        from modelbroker.hookspecs import hookimpl

        async def check(value):
            if value != "Bearer right":
                raise APIError(401, "wrong key", code="invalid_api_key")
            return Principal("alice")

        class Plugin:
            @hookimpl
            def authenticate(self, headers):
                value = headers.get("authorization")
                return None if value is None else check(value)

            @hookimpl
            def admit(self, request, principal):
                if request.model == "premium" and principal is None:
                    raise APIError(403, "premium needs a key", code="model_not_allowed")

        self.plugin = Plugin()


def _gateway_with(gateway, provider, plugin):
    from modelbroker._plugins.manager import make_plugin_manager

    pm = make_plugin_manager()
    pm.register(plugin, name="key-check")
    return gateway({"providers": [provider("a", model="premium")]}, pm=pm)


def test_hook_authenticate(gateway, provider):
    gw = _gateway_with(gateway, provider, _KeyCheck().plugin)
    assert gw.generate({"prompt": "hi"}).status_code == 200  # no say: open
    refused = gw.generate({"prompt": "hi"}, headers={"authorization": "Bearer wrong"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert refused.headers["x-request-id"]
    assert gw.get("/health").status_code == 200  # never asked for /health
    allowed = gw.generate({"prompt": "hi"}, headers={"authorization": "Bearer right"})
    assert allowed.status_code == 200
    lines = gw.log_lines()
    assert len(lines) == 2  # the refused request made no attempt


def test_an_authenticate_plugin_that_fails_refuses_the_request(gateway, provider):
    """Raising at once or when awaited, a broken check is a 500, never a request let through."""
    from modelbroker.hookspecs import hookimpl

    async def broken_later():
        raise RuntimeError("the key server is down")

    class Broken:
        @hookimpl
        def authenticate(self, headers):
            if headers.get("x-fail") == "now":
                raise RuntimeError("bad config")
            return broken_later() if headers.get("x-fail") == "later" else None

    gw = _gateway_with(gateway, provider, Broken())
    assert gw.generate({"prompt": "hi"}).status_code == 200
    for when in ("now", "later"):
        refused = gw.generate({"prompt": "hi"}, headers={"x-fail": when})
        assert refused.status_code == 500, when
        assert refused.json()["error"]["code"] == "authentication_unavailable"
    assert len(gw.log_lines()) == 1  # only the first request reached a provider


def test_hook_admit(gateway, provider):
    import httpx

    gw = _gateway_with(gateway, provider, _KeyCheck().plugin)
    body = {"model": "premium", "messages": [{"role": "user", "content": "hi"}]}
    refused = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    allowed = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"authorization": "Bearer right"},
                         timeout=10)
    assert allowed.status_code == 200
    assert [line["success"] for line in gw.log_lines()] == [True]
