"""core/hookspecs.py: each hook, exercised by a plugin registered in a real gateway.

The plugin manager is built with ``make_plugin_manager(load_entrypoints=False)`` and
the built-in plugins registered by hand, plus the test's own plugin; the gateway then
runs on loopback in front of the fake upstream. tests/test_meta.py checks that every
hook has a ``test_hook_<name>`` here.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from modelbroker._config.messages import ConfigError
from modelbroker._config.settings import Settings
from modelbroker._plugins.hookcall import PluginError
from modelbroker._plugins.manager import make_plugin_manager
from modelbroker._routing.errors import APIError
from modelbroker._routing.gateway import Gateway
from modelbroker._routing.types import Completion, Usage
from modelbroker.hookspecs import hookimpl
from modelbroker.plugins import chat_completions, cost, file_log, generate, openai_http, priority

BUILTINS = {
    "chat": chat_completions,
    "generate": generate,
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


# --- registration ---------------------------------------------------------------------------


class Reverse:
    """Strategy ``reverse``: the providers in reverse file order."""

    def select_provider(self, providers):
        return list(reversed(providers))


class Strategies:
    def __init__(self, **strategies) -> None:
        self.strategies = strategies

    @hookimpl
    def register_strategies(self, register):
        for name, factory in self.strategies.items():
            register(name, factory)


def test_hook_register_strategies(gateway, provider, upstream, write_config):
    config = {"strategy": "reverse", "providers": [provider("a"), provider("b"), provider("c")]}
    with pytest.raises(ConfigError, match=r"unknown strategy 'reverse'; installed strategies: cost, priority$"):
        Gateway.from_settings(Settings(config=write_config(config), log_file=""), make_pm())

    gw = gateway(config, pm=make_pm(reverse=Strategies(reverse=Reverse)))
    assert gw.gateway.strategies == ["cost", "priority", "reverse"]
    assert gw.generate({"prompt": "hi"}).json()["provider"] == "c/c"
    assert gw.generate({"prompt": "hi", "strategy": "priority"}).json()["provider"] == "a/a"


def test_a_strategy_registered_twice_is_refused_naming_both(write_config, provider):
    config = write_config({"providers": [provider("a")]})
    pm = make_pm(mine=Strategies(priority=Reverse))
    with pytest.raises(ConfigError) as caught:
        Gateway.from_settings(Settings(config=config, log_file=""), pm)
    assert str(caught.value) == (
        "strategy 'priority' is registered twice: by plugin 'mine' (registered in code) and by plugin 'priority' "
        "(registered in code); uninstall one of them, or leave one out with plugins: {disabled: [mine]} "
        "or {disabled: [priority]}")


class EchoAdapter:
    """Adapter ``type: echo``: answers in-process, with fixed token counts."""

    calls: list[str] = []

    def __init__(self, config) -> None:
        self.config = config

    async def call_provider(self, provider, request):
        self.calls.append(provider.id)
        return Completion(text=f"echo: {request.prompt_text()}", model=provider.model, usage=Usage(3, 4, 7))


class Adapters:
    def __init__(self, **adapters) -> None:
        self.adapters = adapters

    @hookimpl
    def register_adapters(self, register):
        for name, factory in self.adapters.items():
            register(name, factory)


def test_hook_register_adapters(gateway, provider, upstream, write_config):
    echo_entry = {"name": "local", "type": "echo", "endpoint": "http://echo.invalid/", "model": "parrot",
                  "cost_per_1k_tokens": 2.0, "priority": 1}
    config = {"providers": [echo_entry, provider("remote", priority=2)]}
    with pytest.raises(ConfigError) as caught:
        Gateway.from_settings(Settings(config=write_config(config), log_file=""), make_pm())
    assert "no installed adapter handles type 'echo'" in str(caught.value)
    assert str(caught.value).endswith("installed adapter types: openai")

    EchoAdapter.calls = []
    gw = gateway(config, pm=make_pm(echo=Adapters(echo=EchoAdapter)))
    assert gw.gateway.adapter_types == ["echo", "openai"]
    assert gw.gateway.registry.adapters["echo"].obj.config is gw.gateway.config  # the factory got the config
    body = gw.generate({"prompt": "polly"}).json()
    assert (body["provider"], body["response"], body["tokens"]) == ("local/parrot", "echo: polly", 7)
    assert body["cost"] == pytest.approx(7 * 2.0 / 1000)
    assert EchoAdapter.calls == ["local/parrot"]
    assert upstream.calls == {}


class GuardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    banned: list[str] = []
    message: str = "refused"


class Guard:
    """A guard whose settings are declared, validated, and read per request from ``config``."""

    @hookimpl
    def register_settings(self, register):
        register("word_guard", GuardSettings)

    @hookimpl
    def admit(self, request, config):
        settings = config.plugins.settings_for("word_guard")
        if any(word in request.prompt_text() for word in settings.banned):
            raise APIError(403, settings.message, code="banned_word")


def test_hook_register_settings(gateway, provider, upstream, write_config):
    bad = write_config({"providers": [provider("a")], "plugins": {"word_guard": {"banned": "secret"}}})
    with pytest.raises(ConfigError) as caught:
        Gateway.from_settings(Settings(config=bad, log_file=""), make_pm(guard=Guard()))
    assert str(caught.value) == "providers.yaml: plugins.word_guard.banned: must be a list"

    gw = gateway({"providers": [provider("a")], "plugins": {"word_guard": {"banned": ["secret"]}}},
                 pm=make_pm(guard=Guard()))
    assert gw.generate({"prompt": "a secret"}).json()["error"] == {
        "message": "refused", "type": "permission_error", "code": "banned_word", "param": None}
    assert gw.generate({"prompt": "a word"}).status_code == 200
    defaults = gateway({"providers": [provider("a")]}, pm=make_pm(guard=Guard()))
    assert defaults.gateway.config.plugins.settings_for("word_guard") == GuardSettings()


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


def test_select_provider_orders_the_providers(gateway, provider, upstream):
    config = {"reliability": NO_RETRY, "strategy": "reverse",
              "providers": [provider("first", priority=1), provider("second", priority=2)]}
    gw = gateway(config, pm=make_pm(mine=Strategies(reverse=Reverse)))
    assert gw.generate({"prompt": "hi"}).json()["provider"] == "second/second"
    upstream.set_behavior("*", {"kind": "status", "status": 500})
    attempts = gw.generate({"prompt": "hi"}).json()["error"]["attempts"]
    assert [a["provider"] for a in attempts] == ["second/second", "first/first"]


class OnlyB:
    def select_provider(self, providers):
        return [p for p in providers if p.name == "b"]


class NoneLeft:
    def select_provider(self):
        return []


def test_select_provider_may_return_a_subset(gateway, provider, upstream):
    gw = gateway({"reliability": NO_RETRY, "providers": [provider("a"), provider("b")]},
                 pm=make_pm(subset=Strategies(**{"only-b": OnlyB, "none": NoneLeft})))
    upstream.set_behavior("*", {"kind": "status", "status": 500})
    attempts = gw.generate({"prompt": "hi", "strategy": "only-b"}).json()["error"]["attempts"]
    assert [a["provider"] for a in attempts] == ["b/b"]
    assert gw.generate({"prompt": "hi", "strategy": "none"}).status_code == 503


class Raising:
    def select_provider(self):
        raise ZeroDivisionError("bug in the strategy")


class AnswersNone:
    def select_provider(self, providers):
        return None


@pytest.mark.parametrize(("strategy", "problem"), [
    ("raising", "ZeroDivisionError: bug in the strategy"),
    ("none", "TypeError: strategy 'none' answered a NoneType; select_provider must return a list of providers"),
])
def test_a_broken_select_provider_fails_the_request_clearly(gateway, provider, upstream, caplog, strategy, problem):
    gw = gateway({"providers": [provider("a")]}, pm=make_pm(buggy=Strategies(raising=Raising, none=AnswersNone)))
    with caplog.at_level(logging.ERROR):
        answer = gw.generate({"prompt": "hi", "strategy": strategy})
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["code"] == "plugin_error"
    assert error["message"] == f"plugin 'buggy' failed in select_provider: {problem}; the gateway log has the traceback"
    assert upstream.calls == {}
    assert any("buggy" in r.getMessage() for r in caplog.records)


class BrokenAdapter:
    """Adapter ``type: brittle``, which fails (``when`` says how)."""

    when = "at-once"

    def call_provider(self, provider):
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
def test_a_broken_call_provider_is_a_failed_attempt(gateway, provider, upstream, when):
    adapter = type("Broken", (BrokenAdapter,), {"when": when})
    gw = gateway({"reliability": NO_RETRY,
                  "providers": [provider("broken", priority=1, type="brittle"), provider("fine", priority=2)]},
                 pm=make_pm(brittle=Adapters(brittle=adapter)))
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["provider"] == "fine/fine"
    assert dict(upstream.calls) == {"fine": 1}
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
        self.records: list = []

    @hookimpl
    def on_result(self, provider, request, result, elapsed_ms, attempt, record):
        self.results.append((provider.id, request.request_id, result.text, result.cost, result.usage, attempt, elapsed_ms))
        self.records.append(record)

    @hookimpl
    def on_failure(self, provider, request, error, elapsed_ms, attempt, record):
        self.failures.append((provider.id, request.request_id, error.kind.value, error.status, attempt, elapsed_ms))
        self.records.append(record)

    @hookimpl
    def on_rejected(self, request, request_id, route, status, reason, record):
        self.rejected.append({"request": request, "request_id": request_id, "route": route,
                              "status": status, "reason": reason})
        self.records.append(record)


class RaisingLogger:
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
                 pm=make_pm(recorder=recorder, noisy=RaisingLogger()))
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
    (record,) = recorder.records
    assert (record.request_id, record.attempt, record.provider, record.provider_id, record.model) == (
        "rid-result", 1, "a", "a/a", "a")
    assert (record.outcome, record.success, record.route, record.error_kind, record.error) == (
        "ok", True, "/generate", None, None)
    assert (record.total_tokens, record.cost, record.latency_ms) == (usage.total_tokens, cost, elapsed)
    assert record.request_uid == recorder.records[0].request_uid and len(record.request_uid) == 32


def test_hook_on_failure(gateway, provider, upstream, caplog):
    recorder = Recorder()
    gw = gateway({"reliability": NO_RETRY, "providers": [provider("down", model="fail-503", priority=1),
                                                         provider("up", priority=2)]},
                 pm=make_pm(recorder=recorder, noisy=RaisingLogger()))
    with caplog.at_level(logging.ERROR, logger="modelbroker"):
        answer = gw.generate({"prompt": "hi"}, headers={"x-request-id": "rid-failure"})
    assert answer.status_code == 200
    (failure,) = recorder.failures
    assert failure[:5] == ("down/fail-503", "rid-failure", "status", 503, 1)
    assert [r[5] for r in recorder.results] == [2]
    failed, succeeded = recorder.records
    assert (failed.attempt, failed.outcome, failed.error_kind, failed.status, failed.provider) == (
        1, "failed", "status", 503, "down")
    assert failed.error == "upstream answered 503: fake upstream error 503"
    assert (succeeded.attempt, succeeded.outcome) == (2, "ok")
    assert failed.request_uid == succeeded.request_uid  # one request, two attempts
    assert any("'noisy'" in r.getMessage() and "on_failure" in r.getMessage() for r in caplog.records)


def test_hook_on_rejected(gateway, provider, upstream):
    recorder = Recorder()
    gw = gateway({"providers": [provider("a")]}, pm=make_pm(noisy=RaisingLogger(), recorder=recorder))
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
    rejected = recorder.records[0]
    assert (rejected.attempt, rejected.outcome, rejected.status, rejected.route, rejected.provider) == (
        0, "rejected", 400, "/generate", None)
    assert rejected.error == recorder.rejected[0]["reason"] and rejected.cost == 0.0


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
    """A plugin's subcommand is listed by `modelbroker plugins`, has its own help and runs (the
    ledger's `usage`). `modelbroker --help` loads no plugin, to stay fast, so it does not list it."""
    import subprocess
    import sys

    listed = subprocess.run([sys.executable, "-m", "modelbroker", "plugins"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path).stdout
    assert "command usage" in listed
    help_text = subprocess.run([sys.executable, "-m", "modelbroker", "usage", "--help"], capture_output=True,
                               text=True, timeout=60, cwd=tmp_path).stdout
    assert "Requests, tokens, cost and latency from the usage ledger" in help_text
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


# --- a request's start and end, and each attempt's headers ----------------------------------


class Lifelines:
    """Hears a request's start and end and each attempt, in order, and adds a header per attempt."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    @hookimpl
    def on_request(self, request, headers):
        self.events.append(("request", request.request_id, request.surface, headers.get("x-trace")))

    @hookimpl
    def admit(self, request):
        self.events.append(("admit", request.request_id))

    @hookimpl
    def on_attempt(self, provider, request, attempt):
        self.events.append(("attempt", request.request_id, provider.id, attempt))
        return {"x-attempt-mark": f"{request.request_id}/{attempt}"}

    @hookimpl
    def on_result(self, request, attempt):
        self.events.append(("result", request.request_id, attempt))

    @hookimpl
    def on_failure(self, request, attempt):
        self.events.append(("failure", request.request_id, attempt))

    @hookimpl
    def on_request_end(self, request, status):
        self.events.append(("end", request.request_id, status))

    def ends(self, count: int, timeout_s: float = 5.0) -> list[tuple]:
        """The ``on_request_end`` events, once ``count`` have come (or the timeout passed)."""
        deadline = time.monotonic() + timeout_s
        while sum(e[0] == "end" for e in self.events) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return [e for e in self.events if e[0] == "end"]


class RaisingLifelines:
    @hookimpl
    def on_request(self):
        raise RuntimeError("tracer down")

    @hookimpl
    def on_attempt(self):
        raise RuntimeError("tracer down")

    @hookimpl
    def on_request_end(self):
        raise RuntimeError("tracer down")


def _chat(gw, headers, **fields):
    return gw.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], **fields},
                   headers=headers)


def test_hook_on_request(gateway, provider, upstream, caplog):
    heard = Lifelines()
    gw = gateway({"providers": [provider("a")]}, pm=make_pm(heard=heard, noisy=RaisingLifelines()))
    with caplog.at_level(logging.ERROR, logger="modelbroker"):
        answer = _chat(gw, headers={"x-request-id": "rid-on-request", "x-trace": "t-1"})
    assert answer.status_code == 200  # a plugin raising in on_request is contained
    assert heard.events[:2] == [("request", "rid-on-request", "chat", "t-1"), ("admit", "rid-on-request")]
    assert any("'noisy'" in r.getMessage() and "on_request" in r.getMessage() for r in caplog.records)
    assert heard.ends(1) == [("end", "rid-on-request", 200)]
    heard.events.clear()
    assert gw.post("/v1/chat/completions", content=b"{not json",
                   headers={"content-type": "application/json"}).status_code == 400
    assert heard.events == []  # refused before it was parsed: neither on_request nor on_request_end


def test_hook_on_attempt(gateway, provider, upstream, caplog):
    heard = Lifelines()
    gw = gateway({"reliability": NO_RETRY, "providers": [provider("down", model="fail-503", priority=1),
                                                         provider("up", priority=2)]},
                 pm=make_pm(heard=heard, noisy=RaisingLifelines()))
    with caplog.at_level(logging.WARNING, logger="modelbroker"):
        assert gw.generate({"prompt": "hi"}, headers={"x-request-id": "rid-attempt"}).status_code == 200
    assert [e for e in heard.events if e[0] in ("attempt", "result", "failure")] == [
        ("attempt", "rid-attempt", "down/fail-503", 1), ("failure", "rid-attempt", 1),
        ("attempt", "rid-attempt", "up/up", 2), ("result", "rid-attempt", 2)]
    # the headers reach the upstream, each attempt its own (a raising plugin only loses its own)
    assert [r["headers"].get("x-attempt-mark") for r in upstream.requests] == ["rid-attempt/1", "rid-attempt/2"]
    assert any("'noisy'" in r.getMessage() and "on_attempt" in r.getMessage() for r in caplog.records)
    assert gw.generate({"prompt": "again"}).status_code == 200
    assert "x-attempt-mark" in upstream.requests[-1]["headers"]  # nothing left over from the last request


def test_hook_on_request_end(gateway, provider, upstream):
    heard = Lifelines()
    gw = gateway({"reliability": NO_RETRY, "providers": [provider("a"), provider("down", model="fail-503")]},
                 pm=make_pm(heard=heard, noisy=RaisingLifelines()))
    stream = _chat(gw, stream=True, model="a", headers={"x-request-id": "rid-stream"})
    assert stream.status_code == 200 and "[DONE]" in stream.text
    assert _chat(gw, model="nope", headers={"x-request-id": "rid-404"}).status_code == 404
    assert _chat(gw, model="fail-503", headers={"x-request-id": "rid-502"}).status_code == 502
    ends = heard.ends(3)  # told once the answer has gone out: a moment after the client has read it
    assert ends == [("end", "rid-stream", 200), ("end", "rid-404", 404), ("end", "rid-502", 502)]
    streamed = [e for e in heard.events if e[1] == "rid-stream"]
    assert [e[0] for e in streamed] == ["request", "admit", "attempt", "result", "end"]  # after the stream's end
