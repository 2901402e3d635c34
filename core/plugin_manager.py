"""Build the plugin manager: hook specs, then every plugin in the ``modelbroker`` entry-point group.

Built-in plugins are declared in this project's pyproject.toml under the same
group, so they load exactly like a third party's. A blocked name is never loaded.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from core import hookspecs

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
        pm.load_setuptools_entrypoints(PROJECT)
    pm.check_pending()
    return pm


def plugin_distributions(pm: pluggy.PluginManager) -> dict[str, tuple[str, str]]:
    """Map plugin name to (distribution name, version) for plugins loaded from entry points."""
    found: dict[str, tuple[str, str]] = {}
    for plugin, dist in pm.list_plugin_distinfo():
        name = pm.get_name(plugin)
        if name is not None:
            found[name] = (dist.metadata["name"], dist.version)
    return found
