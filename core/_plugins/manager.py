"""Build the plugin manager: hook specs, then every plugin in the ``modelbroker`` entry-point group.

Built-in plugins are declared in this project's pyproject.toml under the same
group, so they load exactly like a third party's. A blocked name is never loaded.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from modelbroker import hookspecs
from modelbroker._config.messages import ConfigError

PROJECT = "modelbroker"


def make_plugin_manager(
    *, load_entrypoints: bool = True, blocked: Iterable[str] = ()
) -> pluggy.PluginManager:
    """A fresh plugin manager with the hook specs added and the installed plugins loaded."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    if load_entrypoints:
        try:
            pm.load_setuptools_entrypoints(PROJECT)
        except Exception as exc:  # noqa: BLE001 - an installed plugin that does not import
            raise ConfigError(_not_loaded(pm, exc)) from None
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:  # an implementation of a hook that does not exist
        name = pm.get_name(exc.plugin)
        if name is None or not load_entrypoints:
            raise
        dist = plugin_distributions(pm).get(name, ("an unknown distribution",))[0]
        raise ConfigError(_refusal(name, getattr(exc.plugin, "__name__", name), dist, str(exc))) from None
    return pm


def _refusal(name: str, where: str, dist: str, problem: str) -> str:
    return (f"plugin {name!r} ({where}, from {dist}) cannot be loaded: {problem}; "
            f"fix or uninstall it, or leave it out with MODELBROKER_DISABLED_PLUGINS={name}")


def _not_loaded(pm: pluggy.PluginManager, error: Exception) -> str:
    """Which entry point failed to load (pluggy stops at the first and does not say), and what to do."""
    import importlib.metadata

    for entry_point in importlib.metadata.entry_points(group=PROJECT):
        if pm.get_plugin(entry_point.name) is not None or pm.is_blocked(entry_point.name):
            continue
        dist = entry_point.dist.name if entry_point.dist is not None else "an unknown distribution"
        try:
            plugin = entry_point.load()
        except Exception as exc:  # noqa: BLE001
            return _refusal(entry_point.name, entry_point.value, dist, f"{type(exc).__name__}: {exc}")
        if plugin is getattr(error, "plugin", None):  # it imports, but pluggy refused it (a wrong argument)
            return _refusal(entry_point.name, entry_point.value, dist, " ".join(str(error).split()))
    return f"a plugin cannot be loaded: {type(error).__name__}: {error}"


def plugin_distributions(pm: pluggy.PluginManager) -> dict[str, tuple[str, str]]:
    """Map plugin name to (distribution name, version) for plugins loaded from entry points."""
    found: dict[str, tuple[str, str]] = {}
    for plugin, dist in pm.list_plugin_distinfo():
        name = pm.get_name(plugin)
        if name is not None:
            found[name] = (dist.metadata["name"], dist.version)
    return found
