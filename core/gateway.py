"""The gateway: settings, providers.yaml, plugins and the HTTP client, started and stopped together."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pluggy

from core.config import ConfigError, GatewayConfig, ProviderConfig, load_config
from core.hookcall import HookCalls, PluginError
from core.http_client import make_http_client
from core.plugin_manager import make_plugin_manager
from core.router import NoProviderAvailable, Router
from core.settings import Settings
from core.types import ChatRequest

log = logging.getLogger("modelbroker")


class Gateway:
    """Holds what lives as long as the process: config, plugins, client, router."""

    def __init__(self, settings: Settings, config: GatewayConfig, pm: pluggy.PluginManager) -> None:
        self.settings = settings
        self.config = config
        self.pm = pm
        self.strategies, self.adapter_types = check_plugins(config, HookCalls(pm))
        self.client: httpx.AsyncClient | None = None
        self.router: Router | None = None
        for warning in config.warnings:
            log.warning("%s", warning)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, pm: pluggy.PluginManager | None = None) -> Gateway:
        """Load providers.yaml and the plugins; raises ConfigError with a clear message."""
        settings = settings or Settings()
        config = load_config(settings.config)
        if pm is None:
            blocked = [*config.plugins.disabled, *settings.disabled_plugins]
            pm = make_plugin_manager(blocked=blocked)
        return cls(settings, config, pm)

    async def start(self) -> None:
        """Open the HTTP client, run the plugins' on_startup, then freeze the hook lists."""
        self.client = make_http_client()
        try:
            await HookCalls(self.pm).each_awaited(
                "on_startup", pm=self.pm, settings=self.settings, config=self.config, client=self.client
            )
        except PluginError:
            await self.client.aclose()
            raise
        self.pm.check_pending()
        self.hooks = HookCalls(self.pm)
        self.router = Router(self.hooks, self.client, self.config.strategy)

    async def stop(self) -> None:
        """Run every plugin's on_shutdown (each even if another fails), then close the client."""
        await HookCalls(self.pm).each_awaited("on_shutdown", contain=True)
        if self.client is not None:
            await self.client.aclose()

    def candidates(self, request: ChatRequest) -> list[ProviderConfig]:
        """The providers that may serve ``request``; raises NoProviderAvailable with the reason."""
        enabled = self.config.enabled_providers
        if enabled:
            return enabled
        raise NoProviderAvailable(self.why_no_provider())

    def why_no_provider(self) -> str:
        if not self.config.providers:
            return f"no provider is configured in {self.config.source}; add one under 'providers:'"
        reasons = [
            f"{p.id} ({p.disabled_reason or 'enabled: false'})" for p in self.config.providers
        ]
        return "every provider is disabled: " + "; ".join(reasons)

    def describe_plugins(self) -> list[dict[str, Any]]:
        """Every registered plugin with the hooks it implements."""
        rows = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            rows.append({"name": name, "hooks": hooks})
        return rows


def check_plugins(config: GatewayConfig, hooks: HookCalls) -> tuple[list[str], list[str]]:
    """Check the configured strategy and adapter types exist; return what is installed."""
    strategies = sorted({n for _, names in hooks.each("strategy_names") for n in names})
    adapters = sorted({n for _, names in hooks.each("adapter_types") for n in names})
    if config.strategy not in strategies:
        raise ConfigError(
            f"{config.source}: strategy: unknown strategy {config.strategy!r}; "
            f"installed strategies: {', '.join(strategies) or 'none'}"
        )
    for index, provider in enumerate(config.providers):
        if provider.enabled and provider.type not in adapters:
            raise ConfigError(
                f"{config.source}: providers[{index}].type: no installed adapter handles "
                f"type {provider.type!r} (provider {provider.name!r}); "
                f"installed adapter types: {', '.join(adapters) or 'none'}"
            )
    return strategies, adapters
