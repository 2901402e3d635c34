"""core/_routing/gateway.py and core/_server/app.py: startup checks against the installed plugins."""

from __future__ import annotations

import logging

import pytest

from modelbroker._config.messages import ConfigError
from modelbroker._config.settings import Settings
from modelbroker._routing.gateway import Gateway
from modelbroker._server.app import create_app

ENTRY = "{name: a, endpoint: 'http://127.0.0.1:9/v1/chat/completions', model: m, cost_per_1k_tokens: 1"


def settings_for(write_config, text: str, **extra) -> Settings:
    return Settings(config=write_config(text), log_file="", **extra)


def test_gateway_loads_config_and_installed_plugins(write_config, installed_strategies, installed_adapter_types):
    gateway = Gateway.from_settings(settings_for(write_config, f"providers:\n  - {ENTRY}}}\n"))
    assert {"cost", "priority"} <= set(gateway.strategies)
    assert gateway.strategies == installed_strategies
    assert "openai" in gateway.adapter_types
    assert gateway.adapter_types == installed_adapter_types
    assert [p.id for p in gateway.config.providers] == ["a/m"]


@pytest.mark.parametrize("build", [Gateway.from_settings, create_app], ids=["Gateway.from_settings", "create_app"])
def test_unknown_strategy_in_config_lists_installed(write_config, build, installed_strategies):
    settings = settings_for(write_config, f"strategy: fastest\nproviders:\n  - {ENTRY}}}\n")
    with pytest.raises(ConfigError) as caught:
        build(settings)
    assert str(caught.value) == (
        "providers.yaml: strategy: unknown strategy 'fastest'; "
        f"installed strategies: {', '.join(installed_strategies)}"
    )
    assert "cost, " in str(caught.value) and "priority" in str(caught.value)


@pytest.mark.parametrize("build", [Gateway.from_settings, create_app], ids=["Gateway.from_settings", "create_app"])
def test_unknown_adapter_type_lists_installed(write_config, build, installed_adapter_types):
    settings = settings_for(write_config, f"providers:\n  - {ENTRY}}}\n  - {ENTRY.replace('a,', 'b,')}, type: carrier-pigeon}}\n")
    with pytest.raises(ConfigError) as caught:
        build(settings)
    message = str(caught.value)
    assert message.startswith("providers.yaml: providers[1].type: no installed adapter handles type 'carrier-pigeon'")
    assert "(provider 'b')" in message
    assert message.endswith(f"installed adapter types: {', '.join(installed_adapter_types)}")
    assert "openai" in message.rsplit(":", 1)[1]


def test_unknown_adapter_type_on_a_disabled_provider_is_not_checked(write_config):
    text = f"providers:\n  - {ENTRY}}}\n  - {ENTRY.replace('a,', 'b,')}, type: carrier-pigeon, enabled: false}}\n"
    gateway = Gateway.from_settings(settings_for(write_config, text))
    assert [p.enabled for p in gateway.config.providers] == [True, False]


def test_config_error_from_create_app_is_the_config_message(write_config):
    settings = settings_for(write_config, f"providers:\n  - {ENTRY}, priority: first}}\n")
    with pytest.raises(ConfigError, match=r"^providers\.yaml: providers\[0\]\.priority: must be an integer"):
        create_app(settings)


def test_disabled_provider_warnings_are_logged_at_startup(write_config, caplog):
    text = f"providers:\n  - {ENTRY}, api_key: '${{UNSET_KEY_FOR_TEST}}'}}\n"
    with caplog.at_level(logging.WARNING, logger="modelbroker"):
        Gateway.from_settings(settings_for(write_config, text))
    assert any("UNSET_KEY_FOR_TEST" in r.getMessage() and "disabled" in r.getMessage() for r in caplog.records)


def test_disabling_cost_removes_it_from_installed_strategies(write_config, installed_strategies):
    text = f"plugins:\n  disabled: [cost]\nproviders:\n  - {ENTRY}}}\n"
    gateway = Gateway.from_settings(settings_for(write_config, text))
    assert "cost" in installed_strategies
    assert gateway.strategies == [s for s in installed_strategies if s != "cost"]
    assert gateway.pm.get_plugin("cost") is None
    assert gateway.pm.is_blocked("cost")


def test_disabling_cost_then_asking_for_it_in_config_fails(write_config, installed_strategies):
    text = f"strategy: cost\nplugins:\n  disabled: [cost]\nproviders:\n  - {ENTRY}}}\n"
    with pytest.raises(ConfigError) as caught:
        Gateway.from_settings(settings_for(write_config, text))
    rest = ", ".join(s for s in installed_strategies if s != "cost")
    assert str(caught.value).endswith(f"unknown strategy 'cost'; installed strategies: {rest}")


def test_plugins_can_be_disabled_by_setting(write_config, monkeypatch):
    monkeypatch.setenv("MODELBROKER_DISABLED_PLUGINS", '["cost"]')
    gateway = Gateway.from_settings(Settings(config=write_config(f"providers:\n  - {ENTRY}}}\n"), log_file=""))
    assert "cost" not in gateway.strategies and "priority" in gateway.strategies


def test_a_disabled_name_that_no_plugin_has_is_warned_about(write_config, monkeypatch, caplog):
    monkeypatch.setenv("MODELBROKER_DISABLED_PLUGINS", "cost,costs")
    Gateway.from_settings(Settings(config=write_config(f"providers:\n  - {ENTRY}}}\n"), log_file=""))
    [warning] = [r.getMessage() for r in caplog.records if "no installed plugin" in r.getMessage()]
    assert warning.startswith("plugins.disabled / MODELBROKER_DISABLED_PLUGINS names 'costs', which no installed "
                              "plugin is called; installed: anthropic, balanced, cache, chat, cost,")


def test_the_health_plugin_cannot_be_disabled_and_the_message_names_both_places(write_config, monkeypatch):
    monkeypatch.setenv("MODELBROKER_DISABLED_PLUGINS", "health")
    with pytest.raises(ConfigError) as caught:
        Gateway.from_settings(Settings(config=write_config(f"providers:\n  - {ENTRY}}}\n"), log_file=""))
    assert str(caught.value) == ("plugins.disabled / MODELBROKER_DISABLED_PLUGINS: 'health' is part of the core "
                                 "and cannot be disabled; leave it out of both")
