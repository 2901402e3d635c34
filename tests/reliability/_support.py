"""Helpers shared by the reliability tests (no fixtures here: see tests/conftest.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from modelbroker._config.providers import ProviderConfig, ReliabilityConfig
from modelbroker._routing.types import ErrorKind, ProviderError, RateLimit, Usage

#: Reliability numbers small enough for tests: every wait is a fraction of a second.
FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "cooldown_s": 0.5, "max_cooldown_s": 2.0}


def config(*providers: dict, strategy: str | None = None, plugins: dict | None = None,
           **reliability: Any) -> dict:
    """A providers.yaml dict: ``providers``, FAST reliability overridden by ``reliability``."""
    data: dict[str, Any] = {"reliability": {**FAST, **reliability}, "providers": list(providers)}
    if strategy:
        data["strategy"] = strategy
    if plugins:
        data["plugins"] = plugins
    return data


class Clock:
    """A settable monotonic clock for HealthTracker."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def policy(**fields: Any) -> ReliabilityConfig:
    return ReliabilityConfig(**fields)


def make_provider(name: str, **fields: Any) -> ProviderConfig:
    """A ProviderConfig that is never called (unit tests)."""
    fields.setdefault("cost_per_1k_tokens", 0.001)
    return ProviderConfig(name=name, endpoint="http://127.0.0.1:9/v1/chat/completions", model=name, **fields)


def status_failure(status: int, *, retry_after: float | None = None, code: str | None = None,
                   rate_limit: RateLimit | None = None, message: str = "upstream answered") -> ProviderError:
    return ProviderError(ErrorKind.STATUS, f"{message} {status}", status=status, retry_after=retry_after,
                         code=code, rate_limit=rate_limit)


def failure(kind: ErrorKind) -> ProviderError:
    return ProviderError(kind, f"{kind.value} failure")


def usage(total: int) -> Usage:
    return Usage(prompt_tokens=total // 2, completion_tokens=total - total // 2, total_tokens=total)


def health_row(gw, provider_id: str) -> dict:
    """The /health entry of one provider."""
    answer = gw.get("/health")
    assert answer.status_code == 200, answer.text
    return next(p for p in answer.json()["providers"] if p["id"] == provider_id)


def wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def blast(url: str, path: str, bodies: list[Any], *, concurrency: int, timeout: float = 10.0,
          headers: dict[str, str] | None = None) -> list[httpx.Response]:
    """POST every body to ``url + path``, at most ``concurrency`` at once; responses in order.

    A bounded load: ``len(bodies)`` requests, each with a ``timeout``, to a loopback gateway.
    """

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

            async def one(body: Any) -> httpx.Response:
                async with gate:
                    response = await client.post(path, json=body, headers=headers)
                    await response.aread()
                    return response

            return await asyncio.gather(*(one(body) for body in bodies))

    return asyncio.run(run())


def make_router(gateway_config: Any, *, strategy: Any = None, adapter: Any = None) -> Any:
    """A Router for unit tests: no HTTP client, a fresh HealthTracker, no plugin hearing the
    attempts; ``strategy`` and ``adapter`` (objects) are registered as the configured
    strategy and as type ``openai``."""
    from modelbroker._plugins.registry import Built, Registry
    from modelbroker._routing.health import HealthTracker
    from modelbroker._routing.router import Router

    registry = Registry()
    if strategy is not None:
        registry.strategies[gateway_config.strategy] = Built(
            gateway_config.strategy, "test", strategy, strategy.select_provider, ("providers",))
    if adapter is not None:
        registry.adapters["openai"] = Built("openai", "test", adapter, adapter.call_provider, ("provider",))
    return Router(_NoHooks(), registry, None, gateway_config, HealthTracker(gateway_config.reliability), None)


class _NoHooks:
    """No plugin: nobody hears the attempts."""

    def has(self, hook: str) -> bool:
        return False

    def wants(self, hook: str, argument: str) -> bool:
        return False

    def notify(self, hook: str, **kwargs: Any) -> None:
        pass