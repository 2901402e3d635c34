"""Plain-text reports for the CLI: ``modelbroker check`` and ``modelbroker plugins``.

Both are tools for finding what is wrong, so neither stops at a plugin that does not
load: it is reported, in its row or on its own line, and the others are shown.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from modelbroker._cli.prices import describe_prices
from modelbroker._cli.tables import format_table
from modelbroker._config.loading import load_config
from modelbroker._config.messages import ConfigError
from modelbroker._config.providers import GatewayConfig
from modelbroker._config.settings import Settings
from modelbroker._plugins.hookcall import HookCalls
from modelbroker._plugins.manager import PROJECT, PluginManager, make_plugin_manager
from modelbroker._plugins.registry import Registration, settle_plugin_settings
from modelbroker._routing.gateway import Gateway, blocked_plugins
from modelbroker._routing.router import order_by
from modelbroker._routing.types import ChatRequest

SAMPLE = ChatRequest(messages=[{"role": "user", "content": "Hello, how are you today?"}])
#: In this order: the settings first, so that the others see them validated, as in a gateway.
REGISTRATIONS = {"register_settings": "settings", "register_strategies": "strategy",
                 "register_adapters": "adapter", "register_surfaces": "surface"}


@dataclass
class Report:
    """What a command prints: ``text`` on stdout, ``problems`` on stderr; any problem fails it."""

    text: str = ""
    problems: list[str] = field(default_factory=list)


def check_config(settings: Settings) -> Report:
    """Build the gateway ``serve`` would build (plugins, registry, settings), without serving:
    the providers, and the order each strategy gives. A plugin that does not load is a problem,
    and the rest is still checked without it."""
    config = load_config(settings.config)
    pm = make_plugin_manager(blocked=blocked_plugins(settings, config), strict=False)
    report = Report(problems=[failure.message for failure in pm.failures])
    try:
        gateway = Gateway(settings, config, pm)
    except ConfigError as exc:
        report.problems.append(str(exc))
        return report
    report.text = describe_config(settings, gateway)
    return report


def describe_config(settings: Settings, gateway: Gateway) -> str:
    config = gateway.config
    rows = [
        [
            p.id, p.type, str(p.priority),
            "yes" if p.enabled else f"no: {p.disabled_reason or 'enabled: false'}",
        ]
        for p in config.providers
    ]
    count = len(config.providers)
    out = [f"{settings.config}: valid, {count} provider{'' if count == 1 else 's'}, strategy {config.strategy!r}", ""]
    out.append(format_table(rows, ["provider", "type", "priority", "enabled"]))
    out.append("")
    out += [describe_prices(config.providers), ""]
    enabled = config.enabled_providers
    out.append("Order for a short prompt, by strategy:" if enabled else "No enabled provider: nothing to order.")
    for name, strategy in sorted(gateway.registry.strategies.items()) if enabled else ():
        order = order_by(strategy, SAMPLE, enabled, gateway.health, config)
        marker = " (configured)" if name == config.strategy else ""
        out.append(f"  {name}{marker}: " + " -> ".join(p.id for p in order))
    return "\n".join(out)


def list_plugins(settings: Settings) -> Report:
    """Every plugin in the entry-point group: where it comes from, what it registers, its hooks
    (with those of the classes whose objects it registers), and whether it is on. Works with
    or without a providers.yaml; with one, ``plugins.disabled`` is read from it too."""
    config, note = _config_if_any(settings)
    blocked = blocked_plugins(settings, config) if config is not None else list(settings.disabled_plugins)
    pm = make_plugin_manager(blocked=blocked, strict=False)
    failed = {failure.source.name: failure for failure in pm.failures}
    registered = _registered(pm, config or GatewayConfig())
    rows = []
    for ep in sorted(entry_points(group=PROJECT), key=lambda e: e.name):
        plugin = pm.get_plugin(ep.name)
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
        if ep.name in failed:
            state = f"no: cannot be loaded: {failed[ep.name].problem}"
        else:
            state = "yes" if plugin is not None else "no (disabled)"
        rows.append([ep.name, dist, ep.value, ", ".join(registered.get(ep.name, ())) or "-",
                     _hooks(pm, plugin) if plugin is not None else "-", state])
    text = format_table(rows, ["plugin", "distribution", "module", "registers", "hooks", "enabled"])
    return Report(text + (f"\n\n{note}" if note else ""), [failure.message for failure in pm.failures])


def _config_if_any(settings: Settings) -> tuple[GatewayConfig | None, str]:
    if not settings.config.exists():
        return None, (f"({settings.config} does not exist here: plugins.disabled in it was not read; "
                      "give one with --config)")
    return load_config(settings.config), ""


def _registered(pm: PluginManager, config: GatewayConfig) -> dict[str, list[str]]:
    """Plugin name -> ``strategy x``, ``adapter y``, ``surface s``, ``settings z``: what each registers, for
    ``config`` with the plugins' settings validated as a gateway does (as far as they are valid)."""
    found: dict[str, list[str]] = {}
    hooks = HookCalls(pm)
    models: dict[str, Registration] = {}
    for hook, what in REGISTRATIONS.items():
        for plugin, function, argnames in hooks.implementations(hook):
            names = found.setdefault(plugin, [])

            def register(name, value, _plugin=plugin, _names=names, _what=what, _hook=hook):
                _names.append(f"{_what} {name}")
                if _hook == "register_settings":
                    models[name] = Registration(name, _plugin, value)

            arguments = {"register": register, "config": config}
            try:
                function(*map(arguments.__getitem__, argnames))
            except Exception as exc:  # noqa: BLE001 - shown in the row; serve and check refuse it
                names.append(f"({hook} failed: {type(exc).__name__}: {exc})")
        if hook == "register_settings":
            with contextlib.suppress(ConfigError):  # an invalid block: check tells; here a registration may fail
                config = settle_plugin_settings(config, models)
    for plugin, function, argnames in hooks.implementations("register_commands"):
        commands = argparse.ArgumentParser().add_subparsers()
        try:
            function(*map({"commands": commands}.__getitem__, argnames))
        except Exception as exc:  # noqa: BLE001 - shown in the row; the command line names it too
            found.setdefault(plugin, []).append(f"(register_commands failed: {type(exc).__name__}: {exc})")
        found.setdefault(plugin, []).extend(f"command {name}" for name in commands.choices)
    return found


def _hooks(pm: PluginManager, plugin: object) -> str:
    """The plugin's hooks, then those of each class in its module with ``@hookimpl`` methods (the
    objects such a plugin registers in ``on_startup``): ``on_startup; Writer: on_result, ...``."""
    parts = [", ".join(sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])) or "-"]
    marker = f"{PROJECT}_impl"
    for name, cls in sorted(vars(plugin).items()) if inspect.ismodule(plugin) else ():
        if inspect.isclass(cls):
            hooks = sorted(attr for attr, value in vars(cls).items() if hasattr(value, marker))
            if hooks:
                parts.append(f"{name}: {', '.join(hooks)}")
    return "; ".join(parts)
