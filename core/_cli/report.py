"""Plain-text reports for the CLI: ``modelbroker check`` and ``modelbroker plugins``."""

from __future__ import annotations

from importlib.metadata import entry_points

from modelbroker._config.settings import Settings
from modelbroker._plugins.hookcall import HookCalls
from modelbroker._plugins.manager import PROJECT, plugin_distributions
from modelbroker._routing.gateway import Gateway
from modelbroker._routing.types import ChatRequest

SAMPLE = ChatRequest(messages=[{"role": "user", "content": "Hello, how are you today?"}])


def table(rows: list[list[str]], header: list[str]) -> str:
    """A left-aligned text table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def describe_config(settings: Settings) -> str:
    """The providers of a valid providers.yaml and the order each strategy gives."""
    gateway = Gateway.from_settings(settings)
    config = gateway.config
    rows = [
        [
            p.id, p.type, str(p.priority), f"{p.input_price:g}/{p.output_price:g}",
            "yes" if p.enabled else f"no: {p.disabled_reason or 'enabled: false'}",
        ]
        for p in config.providers
    ]
    out = [f"{settings.config}: valid, {len(config.providers)} providers, strategy {config.strategy!r}", ""]
    out.append(table(rows, ["provider", "type", "priority", "price in/out per 1k", "enabled"]))
    out.append("")
    enabled = config.enabled_providers
    out.append("Order for a short prompt, by strategy:" if enabled else "No enabled provider: nothing to order.")
    hooks = HookCalls(gateway.pm)
    for strategy in gateway.strategies if enabled else ():
        _, order = hooks.first(
            "select_provider", request=SAMPLE, providers=enabled, strategy=strategy,
            health=gateway.health, config=config,
        )
        marker = " (configured)" if strategy == config.strategy else ""
        out.append(f"  {strategy}{marker}: " + " -> ".join(p.id for p in order or []))
    return "\n".join(out)


def describe_plugins(settings: Settings) -> str:
    """Every plugin in the entry-point group: where it comes from, its hooks, whether it is on."""
    gateway = Gateway.from_settings(settings)
    pm = gateway.pm
    dists = plugin_distributions(pm)
    rows = []
    for ep in sorted(entry_points(group=PROJECT), key=lambda e: e.name):
        plugin = pm.get_plugin(ep.name)
        dist = dists.get(ep.name) or ((ep.dist.name, ep.dist.version) if ep.dist else ("?", "?"))
        hooks = sorted(c.name for c in pm.get_hookcallers(plugin) or []) if plugin else []
        enabled = "yes" if plugin is not None else "no (disabled)"
        rows.append([ep.name, f"{dist[0]} {dist[1]}", ep.value, ", ".join(hooks) or "-", enabled])
    return table(rows, ["plugin", "distribution", "module", "hooks", "enabled"])
