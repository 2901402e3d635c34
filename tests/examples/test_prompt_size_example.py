"""examples/modelbroker-prompt-size, installed with pip: strategy ``prompt_size`` in a real gateway.

A long prompt goes to the large provider and a short one to the small provider,
on both generation routes; the plugin can be disabled from providers.yaml; a bad
setting stops startup, and ``check``, with the message providers.yaml's own mistakes get.
"""

from __future__ import annotations

import httpx

from modelbroker.testing import free_port

#: About four characters a token: 500 tokens, the threshold, and one token less.
LONG = "abcd" * 500
SHORT = "abcd" * 499


def prompt_size_config(provider, **top) -> dict:
    return {
        "strategy": "prompt_size",
        "reliability": {"retries": 0},
        "plugins": {"prompt_size": {"threshold_tokens": 500}},
        **top,
        "providers": [
            provider("large", model="large-model", context_window=128000,
                     cost_per_1k_input_tokens=0.003, cost_per_1k_output_tokens=0.015),
            provider("small", model="small-model", context_window=8192, cost_per_1k_tokens=0.0001),
        ],
    }


def test_long_prompts_go_to_the_large_provider_short_ones_to_the_small(
    examples_site, provider, upstream, write_config, gateway_process, subprocess_env
):
    gw = gateway_process(write_config(prompt_size_config(provider)), examples_site.env(subprocess_env))
    chosen = {}
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        for name, prompt in (("short", SHORT), ("long", LONG)):
            generated = client.post("/generate", json={"prompt": prompt})
            chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": prompt}]})
            assert generated.status_code == 200 and chat.status_code == 200, generated.text + chat.text
            chosen[name] = {generated.headers["x-modelbroker-provider"], chat.headers["x-modelbroker-provider"]}
        assert generated.json()["response"].startswith("Fake reply from large-model: abcd")
    assert chosen == {"short": {"small/small-model"}, "long": {"large/large-model"}}
    assert dict(upstream.calls) == {"small-model": 2, "large-model": 2}


def test_disabled_in_providers_yaml_the_strategy_is_unknown(
    examples_site, provider, upstream, write_config, run_cli, subprocess_env, installed_strategies
):
    config = write_config(prompt_size_config(provider, plugins={"disabled": ["prompt_size"]}))
    env = examples_site.env(subprocess_env, MODELBROKER_LOG_FILE="")
    done = run_cli("serve", "--config", str(config), "--port", str(free_port()), env=env, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "prompt_size" not in installed_strategies
    assert done.stderr.strip().splitlines()[-1] == (
        f"modelbroker: {config.name}: strategy: unknown strategy 'prompt_size'; "
        f"installed strategies: {', '.join(installed_strategies)}"
    )


def test_a_bad_threshold_stops_startup_and_check_naming_the_setting(
    examples_site, provider, upstream, write_config, run_cli, subprocess_env
):
    config = write_config(prompt_size_config(provider, plugins={"prompt_size": {"threshold_tokens": "lots"}}))
    env = examples_site.env(subprocess_env, MODELBROKER_LOG_FILE="")
    expected = f"modelbroker: {config.name}: plugins.prompt_size.threshold_tokens: must be an integer"
    for command in (["serve", "--port", str(free_port())], ["check"]):
        done = run_cli(*command, "--config", str(config), env=env, timeout=30)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines()[-1] == expected
