"""Strategies, adapters and plugin settings, chosen by name: who registered what.

Plugins register them through ``register_strategies``, ``register_adapters`` and
``register_settings``, each handed a ``register(name, ...)`` callback (as llm's
``register_models`` is). The registry keeps the table, refuses a name registered twice
with both plugins and their distributions named, builds each strategy and adapter
once from its factory, and the router then looks a name up in a dict: nothing is
found by asking every plugin in turn and waiting for one to answer.

A gateway builds its registry when it is created, and again on reload with the new
providers.yaml: ``serve``, ``check`` and a reload run the same factories the same way,
so ``check`` shows the order ``serve`` would use.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from modelbroker._config.messages import ConfigError, location, message
from modelbroker._config.providers import GatewayConfig
from modelbroker._plugins.hookcall import HookCalls
from modelbroker._plugins.manager import PluginManager

#: What ``register_strategies`` and ``register_adapters`` hand each plugin.
Register = Callable[[str, Callable[..., Any]], None]
#: What ``register_settings`` hands each plugin: a block name and a pydantic model.
RegisterSettings = Callable[[str, "type[BaseModel]"], None]

#: The arguments a factory may declare, by name.
FACTORY_ARGUMENTS = frozenset({"config"})
#: The arguments each per-request method may declare, by name.
STRATEGY_ARGUMENTS = ("request", "providers", "health", "config")
ADAPTER_ARGUMENTS = ("provider", "request", "http", "client", "config")


class Strategy(Protocol):
    """What a strategy's factory returns: an object whose ``select_provider`` orders the
    providers for one request. It takes any of ``request``, ``providers``, ``health`` and
    ``config``, by name, and returns the providers to try, best first (a subset is allowed).
    It runs on the event loop for every request: no I/O, and a plain ``def``."""

    def select_provider(self, *args: Any, **kwargs: Any) -> list[Any]: ...


class Adapter(Protocol):
    """What an adapter's factory returns: an object whose ``call_provider`` makes one attempt
    at one provider of its ``type``. It takes any of ``provider``, ``request``, ``http``,
    ``client`` and ``config``, by name, and returns an awaitable (``async def`` is the usual
    way) that gives a ``Completion``, or for a stream an async iterator of ``StreamChunk``."""

    def call_provider(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Registration:
    """A name, the plugin that registered it, and what it registered (a factory or a model)."""

    name: str
    plugin: str
    value: Any


@dataclass(slots=True)
class Built:
    """A strategy or adapter built from its registration: the object, and its per-request
    method with the argument names it declares (looked up once, here)."""

    name: str
    plugin: str
    obj: Any
    method: Callable[..., Any]
    argnames: tuple[str, ...]

    def call(self, kwargs: dict[str, Any]) -> Any:
        return self.method(*map(kwargs.__getitem__, self.argnames))


@dataclass(slots=True)
class Registry:
    """One gateway's strategies and adapters, built for one providers.yaml."""

    strategies: dict[str, Built] = field(default_factory=dict)
    adapters: dict[str, Built] = field(default_factory=dict)
    settings: dict[str, Registration] = field(default_factory=dict)

    @property
    def strategy_names(self) -> list[str]:
        return sorted(self.strategies)

    @property
    def adapter_types(self) -> list[str]:
        return sorted(self.adapters)

    def built(self) -> list[Built]:
        return [*self.strategies.values(), *self.adapters.values()]


def build_registry(pm: PluginManager, hooks: HookCalls, config: GatewayConfig) -> tuple[Registry, GatewayConfig]:
    """Collect every registration, validate the plugins' settings, check that the strategy
    and every enabled provider's type are installed, then build each strategy and adapter.

    Returns the registry and ``config`` with the plugins' settings validated. Raises
    ConfigError naming the file, the plugin and the field, whatever goes wrong.
    """
    settings = _collect(pm, hooks, "register_settings", config)
    for registration in settings.values():
        _check_model(pm, registration)
    config = settle_plugin_settings(config, settings)
    strategies = _collect(pm, hooks, "register_strategies", config)
    adapters = _collect(pm, hooks, "register_adapters", config)
    check_installed(config, sorted(strategies), sorted(adapters))
    registry = Registry(settings=settings)
    for name, registration in strategies.items():
        registry.strategies[name] = _build(pm, registration, "strategy", "select_provider", STRATEGY_ARGUMENTS,
                                           config)
    for name, registration in adapters.items():
        registry.adapters[name] = _build(pm, registration, "adapter", "call_provider", ADAPTER_ARGUMENTS, config)
    return registry, config


def _collect(pm: PluginManager, hooks: HookCalls, hook: str, config: GatewayConfig) -> dict[str, Registration]:
    """Ask every implementation of ``hook`` to register; a name given twice is refused."""
    found: dict[str, Registration] = {}
    what = {"register_strategies": "strategy", "register_adapters": "adapter type",
            "register_settings": "settings block", "register_surfaces": "surface"}[hook]

    def register_for(plugin: str) -> Callable[[str, Any], None]:
        def register(name: str, value: Any) -> None:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"plugin {plugin!r} ({pm.source_of(plugin)}) registered a {what} whose name "
                                  f"is {name!r}; the name must be a non-empty string")
            if name in found:
                one, other = sorted((found[name].plugin, plugin))
                raise ConfigError(
                    f"{what} {name!r} is registered twice: by plugin {one!r} ({pm.source_of(one)}) and by "
                    f"plugin {other!r} ({pm.source_of(other)}); uninstall one of them, or leave one out with "
                    f"plugins: {{disabled: [{one}]}} or {{disabled: [{other}]}}")
            found[name] = Registration(name, plugin, value)

        return register

    for plugin, function, argnames in hooks.implementations(hook):
        arguments = {"register": register_for(plugin), "config": config}
        try:
            function(*map(arguments.__getitem__, argnames))
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - named, with what the plugin said
            raise ConfigError(f"plugin {plugin!r} ({pm.source_of(plugin)}) failed in {hook}: "
                              f"{type(exc).__name__}: {exc}") from exc
    return found


def _build(pm: PluginManager, registration: Registration, what: str, method_name: str,
           allowed: tuple[str, ...], config: GatewayConfig) -> Built:
    """Run a factory and check what it gave; every problem names the plugin and the name."""
    name, plugin, factory = registration.name, registration.plugin, registration.value
    where = f"plugin {plugin!r} ({pm.source_of(plugin)}), {what} {name!r}"
    if not callable(factory):
        raise ConfigError(f"{where}: register() takes a factory, a class or a function that returns the "
                          f"{what}, not a {type(factory).__name__}; write register({name!r}, "
                          f"{type(factory).__name__})")
    factory_args = _declared(factory, FACTORY_ARGUMENTS, f"{where}: its factory")
    try:
        obj = factory(**{argument: config for argument in factory_args})
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{where}: its factory failed: {type(exc).__name__}: {exc}") from exc
    method = getattr(obj, method_name, None)
    if not callable(method):
        raise ConfigError(f"{where}: the factory gave a {type(obj).__name__}, which has no {method_name} method")
    if what == "strategy" and (inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)):
        raise ConfigError(f"{where}: its select_provider is an async def; it must be a plain def (it runs "
                          "on the event loop for every request, and does no I/O)")
    argnames = _declared(method, frozenset(allowed), f"{where}: its {method_name}")
    ordered = tuple(argument for argument in allowed if argument in argnames)
    return Built(name, plugin, obj, method, ordered)


def _declared(function: Callable[..., Any], allowed: frozenset[str], what: str) -> set[str]:
    """The parameter names of ``function``; any other than ``allowed`` is refused."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: it takes nothing we know of
        return set()
    names = {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    unknown = sorted(names - allowed)
    if unknown:
        raise ConfigError(f"{what} takes {', '.join(map(repr, unknown))}, which it cannot be given; "
                          f"it may take any of: {', '.join(sorted(allowed)) or 'nothing'}")
    return names


def _check_model(pm: PluginManager, registration: Registration) -> None:
    model = registration.value
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConfigError(f"plugin {registration.plugin!r} ({pm.source_of(registration.plugin)}) registered "
                          f"settings {registration.name!r} with a {type(model).__name__}; register a pydantic "
                          "model class (a subclass of pydantic.BaseModel)")


def settle_plugin_settings(config: GatewayConfig, settings: dict[str, Registration]) -> GatewayConfig:
    """``config`` with each registered ``plugins: <name>:`` block validated by its model
    (an absent block gives the model's defaults); errors as providers.yaml's are told."""
    blocks = config.plugins.model_extra or {}
    validated: dict[str, BaseModel] = {}
    problems: list[str] = []
    for name, registration in settings.items():
        block = blocks.get(name)
        if block is None:
            block = {}
        if not isinstance(block, dict):
            problems.append(f"{config.source}: plugins.{name}: must be a mapping")
            continue
        try:
            validated[name] = registration.value.model_validate(block)
        except ValidationError as exc:
            problems += [f"{config.source}: {location(('plugins', name, *error['loc']))}: {message(error)}"
                         for error in exc.errors(include_url=False, include_input=False)]
    if problems:
        raise ConfigError("\n".join(problems))
    return config.with_plugin_settings(validated)


def check_installed(config: GatewayConfig, strategies: list[str], adapters: list[str]) -> None:
    """The configured strategy and every enabled provider's type must be registered."""
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


@dataclass(slots=True)
class BuiltSurface:
    """A surface built from its registration: its name, plugin and object, and its paths."""

    name: str
    plugin: str
    obj: Any
    paths: tuple[str, ...]
    error_paths: tuple[str, ...]


#: Paths the core answers itself, which no surface may take.
CORE_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/v1/models", "/models", "/openapi.json", "/docs",
                        "/redoc", "/metrics"})
#: Folders of such paths: /docs/assets/ (Swagger UI's and ReDoc's files), /docs/oauth2-redirect.
CORE_FOLDERS = ("/docs/",)


def build_surfaces(pm: PluginManager, hooks: HookCalls, config: GatewayConfig) -> dict[str, BuiltSurface]:
    """Collect every ``register_surfaces`` registration and build each surface once.

    Surfaces are built when the gateway is created, not again on reload: their paths are
    the app's routes. A path claimed twice, or a surface without what it needs, raises
    ConfigError naming the plugins.
    """
    built: dict[str, BuiltSurface] = {}
    owner: dict[str, str] = {}
    for name, registration in _collect(pm, hooks, "register_surfaces", config).items():
        plugin, factory = registration.plugin, registration.value
        where = f"plugin {plugin!r} ({pm.source_of(plugin)}), surface {name!r}"
        if not callable(factory):
            raise ConfigError(f"{where}: register() takes a factory (a class or a function that returns the "
                              f"surface), not a {type(factory).__name__}")
        args = _declared(factory, FACTORY_ARGUMENTS, f"{where}: its factory")
        try:
            obj = factory(**{argument: config for argument in args})
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"{where}: its factory failed: {type(exc).__name__}: {exc}") from exc
        missing = [method for method in ("parse", "answer", "stream") if not callable(getattr(obj, method, None))]
        if missing:
            raise ConfigError(f"{where}: the factory gave a {type(obj).__name__}, which has no "
                              f"{', '.join(missing)} method (see modelbroker.Surface)")
        paths = _paths(getattr(obj, "paths", None), f"{where}: paths")
        error_paths = _paths(getattr(obj, "error_paths", ()) or (), f"{where}: error_paths", empty=True)
        for path in paths:
            if path in CORE_PATHS or path.startswith(CORE_FOLDERS):
                raise ConfigError(f"{where}: path {path!r} is the gateway's own; choose another")
            if path in owner:
                raise ConfigError(f"path {path!r} is claimed by two surfaces: {owner[path]} and {where}; "
                                  "uninstall or disable one of the plugins")
            owner[path] = where
        built[name] = BuiltSurface(name, plugin, obj, paths, error_paths)
    return built


def _paths(value: Any, what: str, empty: bool = False) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, frozenset, set)):
        raise ConfigError(f"{what} must be a list of paths such as ['/v1/things'], not {value!r}")
    paths = tuple(value)
    if not paths and not empty:
        raise ConfigError(f"{what} is empty; give at least one path such as '/v1/things'")
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/") or (path != "/" and path.endswith("/")):
            raise ConfigError(f"{what}: {path!r} is not a path: it must start with '/' and not end with one")
    return paths
