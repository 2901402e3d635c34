"""The gateway: settings, providers.yaml, plugins and the HTTP client, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx
import pluggy

from modelbroker._config.loading import load_config
from modelbroker._config.messages import ConfigError
from modelbroker._config.providers import GatewayConfig, ProviderConfig
from modelbroker._config.settings import Settings, load_settings
from modelbroker._plugins.hookcall import HookCalls, PluginError
from modelbroker._plugins.manager import PROJECT, PluginManager, make_plugin_manager
from modelbroker._plugins.registry import Registry, build_registry, build_surfaces
from modelbroker._routing.ceiling import within_ceiling
from modelbroker._routing.errors import APIError, NoProviderAvailable, UnknownModel
from modelbroker._routing.features import ALL_FEATURES, FEATURES, provider_features, request_features
from modelbroker._routing.health import HealthTracker
from modelbroker._routing.router import Router
from modelbroker._routing.state import MemoryState, SharedState
from modelbroker._routing.types import ChatRequest
from modelbroker._upstream.client import UpstreamHTTP
from modelbroker._upstream.httpx_client import make_http_client

log = logging.getLogger("modelbroker")

#: The name the health tracker is registered under, as a plugin hearing every attempt.
HEALTH_PLUGIN = "health"
#: How often a replica reads the cooldowns other replicas published (shared state only).
COOLDOWN_SYNC_S = 1.0


class Gateway:
    """Holds what lives as long as the process: config, plugins, client, router."""

    def __init__(self, settings: Settings, config: GatewayConfig, pm: PluginManager) -> None:
        self.settings = settings
        self.pm = pm
        #: The registrations are asked of the plugins loaded now, at startup and at every reload alike.
        self._registering = HookCalls(pm)
        self.registry, self.config = build_registry(pm, self._registering, config)
        self._join(self.registry)
        #: The APIs clients speak (name -> BuiltSurface), built once: their paths are routes.
        self.surfaces = build_surfaces(pm, self._registering, self.config)
        self._join_surfaces()
        self._by_target = targets_by_kind(config.providers)
        self._features = feature_table(self.registry, self.config)
        self.health = HealthTracker(config.reliability)
        self.client: httpx.AsyncClient | None = None
        self.router: Router | None = None
        self.state: SharedState | None = None
        for warning in config.warnings:
            log.warning("%s", warning)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, pm: PluginManager | None = None, *,
                      plugins: Mapping[str, object] | None = None, load_installed: bool = True) -> Gateway:
        """Load providers.yaml and the plugins; raises ConfigError with a clear message.

        ``plugins`` (name -> module or object) are registered besides the installed ones
        (none, without ``load_installed``), as a test gateway does; a blocked name is left out.
        ``pm``, a plugin manager built by the caller, is used as it is instead.
        """
        settings = settings or load_settings()
        config = load_config(settings.config)
        try:
            if pm is None:
                pm = make_plugin_manager(load_entrypoints=load_installed, blocked=blocked_plugins(settings, config))
                for name, plugin in (plugins or {}).items():
                    pm.register(plugin, name=name)
            return cls(settings, config, pm)
        except (PluginError, pluggy.PluginValidationError) as exc:
            raise ConfigError(f"a plugin failed to load: {exc}") from None

    @property
    def strategies(self) -> list[str]:
        """The registered strategy names, sorted."""
        return self.registry.strategy_names

    @property
    def adapter_types(self) -> list[str]:
        """The registered provider types, sorted."""
        return self.registry.adapter_types

    def _join(self, registry: Registry) -> None:
        """A strategy or adapter object with ``@hookimpl`` methods takes part in the hooks, as an
        object registered in ``on_startup`` does (a strategy that learns from ``on_result``)."""
        for built in registry.built():
            if _has_hookimpls(built.obj):
                try:
                    self.pm.register(built.obj, name=_joined_name(built))
                except (ValueError, pluggy.PluginValidationError) as exc:
                    raise ConfigError(f"plugin {built.plugin!r}: the object of {built.name!r} cannot take part "
                                      f"in the hooks: {' '.join(str(exc).split())}") from None

    def _join_surfaces(self) -> None:
        for surface in self.surfaces.values():
            if _has_hookimpls(surface.obj):
                try:
                    self.pm.register(surface.obj, name=_joined_name(surface))
                except (ValueError, pluggy.PluginValidationError) as exc:
                    raise ConfigError(f"plugin {surface.plugin!r}: the surface {surface.name!r} cannot take part "
                                      f"in the hooks: {' '.join(str(exc).split())}") from None

    def _leave(self, registry: Registry) -> None:
        for built in registry.built():
            if self.pm.get_plugin(_joined_name(built)) is built.obj:
                self.pm.unregister(built.obj)

    async def start(self) -> None:
        """Open the HTTP client, run the plugins' on_startup, then freeze the hook lists."""
        _, store = HookCalls(self.pm).first("state_store", settings=self.settings)
        self.state = store or MemoryState()
        self.client = make_http_client()
        self.http = UpstreamHTTP(self.settings.upstream_transport)
        await self.http.start()
        try:
            await HookCalls(self.pm).each_awaited(
                "on_startup", pm=self.pm, settings=self.settings, config=self.config, client=self.client,
                state=self.state, health=self.health,
            )
        except PluginError:
            await self.client.aclose()
            await self.http.close()
            raise
        self.pm.register(self.health, name=HEALTH_PLUGIN)
        self.hooks = HookCalls(self.pm)
        self._share_cooldowns()
        self.router = Router(self.hooks, self.registry, self.client, self.config, self.health, self.http)

    def _share_cooldowns(self) -> None:
        """With a shared store, publish the cooldowns this replica starts and adopt, every
        second, those the other replicas started (in-process state has nobody to share with)."""
        if isinstance(self.state, MemoryState):
            return
        loop = asyncio.get_running_loop()
        self._publishing: set[asyncio.Task] = set()

        def publish(provider_id: str, until: float) -> None:
            task = loop.create_task(self.state.publish_cooldown(provider_id, until))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)

        self.health.on_cooldown = publish
        self._cooldown_sync = loop.create_task(self._adopt_cooldowns(), name="modelbroker-cooldowns")

    async def _adopt_cooldowns(self) -> None:
        while True:
            await asyncio.sleep(COOLDOWN_SYNC_S)
            try:
                remote = await self.state.cooldowns()
            except Exception:  # noqa: BLE001 - a store must not raise; if one does, try again later
                log.exception("reading shared cooldowns failed")
                continue
            by_id = {p.id: p for p in self.config.providers}
            for provider_id, until in remote.items():
                if provider_id in by_id:
                    self.health.adopt_cooldown(by_id[provider_id], until)

    async def reload(self) -> GatewayConfig:
        """Re-read providers.yaml; a valid file replaces the old one at once, an invalid one
        raises ConfigError and changes nothing. Requests in flight finish on the old one.

        The plugins register their strategies and adapters again, for the new file, and
        new objects are built from their factories. Plugins are not loaded or unloaded: a
        change to ``plugins.disabled`` needs a restart.
        """
        config = await asyncio.to_thread(load_config, self.settings.config)
        registry, config = build_registry(self.pm, self._registering, config)
        for warning in config.warnings:
            log.warning("%s", warning)
        if config.plugins.disabled != self.config.plugins.disabled:
            log.warning("reload: plugins.disabled changed; restart the gateway for that to apply")
        self._leave(self.registry)
        try:
            self._join(registry)
        except ConfigError:
            self._leave(registry)
            self._join(self.registry)
            raise
        # No await from here on: every request sees either the old set or the new one.
        self.health.policy = config.reliability
        self.config = config
        self.registry = registry
        self._by_target = targets_by_kind(config.providers)
        self._features = feature_table(registry, config)
        self.hooks = HookCalls(self.pm)
        self.router = Router(self.hooks, registry, self.client, config, self.health, self.http)
        log.warning("reloaded %s: %d providers, strategy %r", config.source, len(config.providers), config.strategy)
        return config

    async def stop(self) -> None:
        """Run every plugin's on_shutdown (each even if another fails), then close the client."""
        sync = getattr(self, "_cooldown_sync", None)
        if sync is not None:
            sync.cancel()
        await HookCalls(self.pm).each_awaited("on_shutdown", contain=True)
        if self.client is not None:
            await self.client.aclose()
            await self.http.close()
        if self.state is not None:
            await self.state.close()

    def candidates(self, request: ChatRequest) -> list[ProviderConfig]:
        """The enabled providers that may serve ``request``, from what it asks for in ``model``.

        ``None`` or ``auto``: all. A provider id, a model name or a provider name:
        the providers that match (in that order of precedence). A strategy name:
        all, routed by that strategy (set on ``request.strategy``). Raises
        UnknownModel, or NoProviderAvailable with the reason.
        """
        target = request.model
        by_target = self._by_target.get(request.kind)
        if by_target is None:
            raise NoProviderAvailable(f"no provider of kind {request.kind!r} is configured in {self.config.source}; "
                                      f"add one with 'kind: {request.kind}' under 'providers:'")
        if target is None or target == "auto":
            matches = by_target[ALL]
        elif target in by_target:
            matches = by_target[target]
        elif target in self.strategies:
            request.strategy = request.strategy or target
            matches = by_target[ALL]
        else:
            raise UnknownModel(target, self.model_names(request.kind))
        enabled = [p for p in matches if p.enabled]
        if not enabled:
            raise NoProviderAvailable(self.why_no_provider(matches))
        if self._features is not None or (request.native is not None and request.native.required):
            enabled = self._able(request, enabled)
        if request.max_cost is not None:
            enabled = within_ceiling(request, enabled)
        return enabled

    def _able(self, request: ChatRequest, providers: list[ProviderConfig]) -> list[ProviderConfig]:
        """``providers`` less those that cannot carry what ``request`` needs (noted in
        ``request.skipped``); raises APIError 400 when none can."""
        needs = request_features(request)
        if not needs:
            return providers
        table = self._features or {}
        order = [*FEATURES, *sorted(needs - ALL_FEATURES)]  # the chat features, then a native format
        able, skipped = [], {}
        for provider in providers:
            lacking = needs - table.get(provider.id, ALL_FEATURES)
            if lacking:
                skipped[provider.id] = [feature for feature in order if feature in lacking]
            else:
                able.append(provider)
        if skipped:
            request.skipped = skipped
        if able:
            return able
        feature = next(feature for feature in order if any(feature in lack for lack in skipped.values()))
        lacking = [provider_id for provider_id, lack in skipped.items() if feature in lack]
        native = request.native
        if native is not None and feature == native.format:
            raise APIError(400, f"{native.required}, which only a provider that speaks {feature} natively can "
                           f"carry, and none here does: {', '.join(lacking)} cannot; leave it out, or add such "
                           "a provider", code="unsupported_feature", skipped=skipped)
        raise APIError(400, f"no provider here can carry this request's {feature}: {', '.join(lacking)} "
                       f"cannot (their adapters do not support it, or providers.yaml says so under "
                       f"'capabilities:'); leave {feature} out, or ask for a model that has it",
                       code="unsupported_feature", param=FEATURE_PARAMS.get(feature, feature),
                       skipped=skipped)

    async def admit(self, request: ChatRequest) -> None:
        """Let every ``admit`` plugin refuse ``request`` (an APIError) before it is routed."""
        await self.hooks.each_awaited("admit", request=request, principal=request.principal, config=self.config)

    def deadline(self, asked_s: str | None) -> float:
        """When a request must be answered: the configured request timeout, or less if the
        client asked for less (``x-modelbroker-timeout`` header, in seconds)."""
        timeout = self.config.reliability.request_timeout_s
        if asked_s:
            try:
                timeout = min(timeout, max(0.001, float(asked_s)))
            except ValueError:
                pass
        return time.monotonic() + timeout

    def model_names(self, kind: str | None = None) -> list[str]:
        """Everything a client may put in ``model`` (for requests of ``kind``, else of any):
        ids, model names, provider names, ``auto`` and strategies."""
        kinds = [kind] if kind is not None else list(self._by_target)
        names = dict.fromkeys(name for k in kinds for name in self._by_target.get(k, {}) if name is not ALL)
        return [*names, "auto", *self.strategies]

    def why_no_provider(self, providers: list[ProviderConfig]) -> str:
        if not providers:
            return f"no provider is configured in {self.config.source}; add one under 'providers:'"
        reasons = [f"{p.id} ({p.disabled_reason or 'enabled: false'})" for p in providers]
        return "every provider that could serve it is disabled: " + "; ".join(reasons)

    def describe_plugins(self) -> list[dict[str, Any]]:
        """Every registered plugin with the hooks it implements."""
        rows = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            rows.append({"name": name, "hooks": hooks})
        return rows


def feature_table(registry: Registry, config: GatewayConfig) -> dict[str, frozenset[str]] | None:
    """provider id -> what it can carry; None when every provider can carry everything
    (the common case: then no request pays for the check)."""
    table = {}
    for provider in config.providers:
        adapter = registry.adapters.get(provider.type)
        stated = getattr(adapter.obj, "features", None) if adapter is not None else None
        table[provider.id] = provider_features(stated, provider.capabilities)
    if all(features == ALL_FEATURES for features in table.values()):
        return None  # (one with a native format more is kept: a request may need that format)
    return table


#: The request field each feature comes from, for an error's ``param``.
FEATURE_PARAMS = {"json_object": "response_format", "json_schema": "response_format", "images": "messages",
                  "audio": "modalities"}


#: The key, in a kind's target index, of all that kind's providers (an object: no name equals it).
ALL: Any = object()


def targets_by_kind(providers: list[ProviderConfig]) -> dict[str, dict[Any, list[ProviderConfig]]]:
    """kind -> its ``target_index``, with ``ALL`` -> the kind's providers. A kind with no
    provider has no entry, but ``chat`` always has one (the seed's requests are chat)."""
    kinds: dict[str, list[ProviderConfig]] = {"chat": []}
    for provider in providers:
        kinds.setdefault(provider.kind, []).append(provider)
    indexes: dict[str, dict[Any, list[ProviderConfig]]] = {}
    for kind, members in kinds.items():
        index: dict[Any, list[ProviderConfig]] = dict(target_index(members))
        index[ALL] = members
        indexes[kind] = index
    return indexes


def target_index(providers: list[ProviderConfig]) -> dict[str, list[ProviderConfig]]:
    """``model`` value -> providers: ids first, then model names, then provider names."""
    index: dict[str, list[ProviderConfig]] = {}
    for key in ("id", "model", "name"):
        found: dict[str, list[ProviderConfig]] = {}
        for provider in providers:
            found.setdefault(getattr(provider, key), []).append(provider)
        for value, matches in found.items():
            index.setdefault(value, matches)
    return index


def blocked_plugins(settings: Settings, config: GatewayConfig) -> list[str]:
    """The plugins not to load: ``plugins.disabled`` and ``MODELBROKER_DISABLED_PLUGINS`` together."""
    blocked = [*config.plugins.disabled, *settings.disabled_plugins]
    if HEALTH_PLUGIN in blocked:
        raise ConfigError(f"plugins.disabled / MODELBROKER_DISABLED_PLUGINS: {HEALTH_PLUGIN!r} is part of "
                          "the core and cannot be disabled; leave it out of both")
    _warn_unknown_disabled(blocked)
    return blocked


def _warn_unknown_disabled(blocked: list[str]) -> None:
    """A name in plugins.disabled or MODELBROKER_DISABLED_PLUGINS that no installed plugin has is
    probably misspelt, and the plugin meant to be left out is running."""
    import importlib.metadata

    installed = {entry_point.name for entry_point in importlib.metadata.entry_points(group=PROJECT)}
    for name in dict.fromkeys(blocked):
        if name not in installed:
            log.warning("plugins.disabled / MODELBROKER_DISABLED_PLUGINS names %r, which no installed plugin is "
                        "called; installed: %s", name, ", ".join(sorted(installed)))


def _has_hookimpls(obj: object) -> bool:
    marker = f"{PROJECT}_impl"
    return any(hasattr(getattr(type(obj), name, None), marker) for name in dir(type(obj)))


def _joined_name(built) -> str:
    return f"{built.plugin}/{built.name}"
