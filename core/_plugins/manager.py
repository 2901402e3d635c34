"""Load the plugins: the hook specs, then every plugin in the ``modelbroker`` entry-point group.

Built-in plugins are declared in this project's pyproject.toml under the same group, so
they load exactly like a third party's. A blocked name is never loaded.

Entry points are loaded one by one rather than with pluggy's
``load_setuptools_entrypoints``, which stops at the first plugin that does not import
and does not say which one it was. Here every failure is kept with the plugin's name,
module and distribution: ``serve`` stops at it with a message that says what to do,
while ``check`` and ``plugins`` (the tools meant to diagnose it) report it and go on.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Iterable
from dataclasses import dataclass

import pluggy

from modelbroker import hookspecs
from modelbroker._config.messages import ConfigError

PROJECT = "modelbroker"
#: Hooks whose implementations may be ``async def``: the core awaits what they return and
#: needs no answer from them at once. Every other hook must be a plain ``def``: an
#: ``async def`` answers with a coroutine even when it means to decline, or is never awaited.
MAY_BE_ASYNC = frozenset({"on_startup", "on_shutdown", "admit"})


@dataclass(frozen=True, slots=True)
class PluginSource:
    """Where a plugin came from: its entry point and the distribution that declares it."""

    name: str
    module: str
    distribution: str
    version: str

    @property
    def described(self) -> str:
        return f"{self.module}, from {self.distribution} {self.version}"


@dataclass(frozen=True, slots=True)
class PluginFailure:
    """A plugin that could not be loaded, and why."""

    source: PluginSource
    problem: str

    @property
    def message(self) -> str:
        return (f"plugin {self.source.name!r} ({self.source.described}) cannot be loaded: {self.problem}; "
                f"fix or uninstall it, or leave it out with MODELBROKER_DISABLED_PLUGINS={self.source.name}")


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with the gateway's hook specs, which knows where each plugin came from,
    keeps the plugins that failed to load, and refuses an ``async def`` where a hook needs a
    plain ``def`` (for every registration, also of objects registered in ``on_startup``)."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, PluginSource] = {}
        self.failures: list[PluginFailure] = []

    def register(self, plugin: object, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        if registered is None:  # a blocked name
            return None
        try:
            _check_hooks(self, plugin, registered)
        except pluggy.PluginValidationError:
            self.unregister(plugin)
            raise
        return registered

    def load_installed(self) -> None:
        """Register every entry point of the group that is not blocked; keep each failure."""
        for entry_point in importlib.metadata.entry_points(group=PROJECT):
            if self.is_blocked(entry_point.name) or self.get_plugin(entry_point.name) is not None:
                continue
            source = _source(entry_point)
            try:
                self.register(entry_point.load(), name=entry_point.name)
            except pluggy.PluginValidationError as exc:
                self.failures.append(PluginFailure(source, " ".join(str(exc).split())))
            except Exception as exc:  # noqa: BLE001 - a plugin that does not import
                self.failures.append(PluginFailure(source, f"{type(exc).__name__}: {exc}"))
            else:
                self.sources[entry_point.name] = source

    def source_of(self, name: str) -> str:
        """Where plugin ``name`` came from, for messages: its module and distribution."""
        source = self.sources.get(name)
        return source.described if source is not None else "registered in code"

    def distribution_of(self, name: str) -> str:
        """The distribution (with its version) that declares plugin ``name``, for messages."""
        source = self.sources.get(name)
        return f"{source.distribution} {source.version}" if source is not None else "registered in code"


def make_plugin_manager(*, load_entrypoints: bool = True, blocked: Iterable[str] = (),
                        strict: bool = True) -> PluginManager:
    """A fresh plugin manager with the hook specs added and the installed plugins loaded.

    ``strict``: a plugin that cannot be loaded raises ConfigError (``serve``). Without it
    the failure is kept in ``pm.failures`` and the others load (``check``, ``plugins``).
    """
    pm = PluginManager()
    for name in blocked:
        pm.set_blocked(name)
    if load_entrypoints:
        pm.load_installed()
    if strict and pm.failures:
        raise ConfigError(pm.failures[0].message)
    return pm


def _source(entry_point: importlib.metadata.EntryPoint) -> PluginSource:
    dist = entry_point.dist
    if dist is None:
        return PluginSource(entry_point.name, entry_point.value, "an unknown distribution", "")
    return PluginSource(entry_point.name, entry_point.value, dist.metadata["name"], dist.version)


def _check_hooks(pm: PluginManager, plugin: object, name: str) -> None:
    """Refuse a hook that does not exist, an ``async def`` where a plain ``def`` is needed,
    and a hook wrapper (the core calls implementations one at a time)."""
    for caller in pm.get_hookcallers(plugin) or ():
        impls = [impl for impl in caller.get_hookimpls() if impl.plugin is plugin]
        if not caller.has_spec():
            raise pluggy.PluginValidationError(
                plugin, f"unknown hook {caller.name!r} in plugin {name!r}: no hook of that name exists "
                        "(docs/hooks.md lists them)")
        for impl in impls:
            if impl.hookwrapper or impl.wrapper:
                raise pluggy.PluginValidationError(
                    plugin, f"plugin {name!r}: its {caller.name} is a hook wrapper; wrappers are not supported")
            function = impl.function
            if caller.name not in MAY_BE_ASYNC and (
                    inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)):
                raise pluggy.PluginValidationError(
                    plugin, f"plugin {name!r}: its {caller.name} is an async def; {caller.name} must be a plain "
                            "def (return an awaitable from it where the hook allows one)")
