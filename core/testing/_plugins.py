"""A plugin's registrations and settings, without a gateway: for unit tests of strategies and adapters."""

from __future__ import annotations

import inspect
from typing import Any


def registered(plugin: Any, hook: str = "register_strategies", config: Any = None) -> dict[str, Any]:
    """What ``plugin`` (a module or an object) registers through ``hook`` (``register_strategies``,
    ``register_adapters`` or ``register_settings``): name -> the factory or model it gave."""
    found: dict[str, Any] = {}
    function = getattr(plugin, hook)
    arguments = {"register": found.__setitem__, "config": config}
    names = [name for name in inspect.signature(function).parameters if name in arguments]
    function(**{name: arguments[name] for name in names})
    return found


def config_for(text: str = "", *plugins: Any) -> Any:
    """A ``GatewayConfig`` from the YAML ``text`` of a providers.yaml, with the settings blocks
    that ``plugins`` (modules or objects) declare validated, as a gateway does: what a
    strategy's ``select_provider`` receives as ``config``. Raises ConfigError as a gateway would."""
    from modelbroker._config.loading import parse_config
    from modelbroker._plugins.registry import Registration, settle_plugin_settings

    config = parse_config(text, environ={})
    models = {name: Registration(name, "test", model)
              for plugin in plugins for name, model in registered(plugin, "register_settings").items()}
    return settle_plugin_settings(config, models)
