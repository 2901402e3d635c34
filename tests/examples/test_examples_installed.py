"""The example distributions as packages: what ``modelbroker plugins`` says of them once
installed, their own test suites run against the installed packages, and their READMEs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from modelbroker._config.loading import parse_config

EXAMPLES = ["modelbroker-prompt-size", "modelbroker-echo-wire"]

ROWS = {
    "prompt_size": (["prompt_size", "modelbroker-prompt-size", "1.0.0", "modelbroker_prompt_size"],
                    "settings prompt_size, strategy prompt_size register_settings, register_strategies"),
    "echowire": (["echowire", "modelbroker-echo-wire", "1.0.0", "modelbroker_echo_wire"],
                 "adapter echowire register_adapters"),
}


def both_plugins_config(provider) -> dict:
    """A providers.yaml that needs both plugins: strategy prompt_size, a provider of type echowire."""
    return {"strategy": "prompt_size", "providers": [
        provider("large", context_window=128000, cost_per_1k_tokens=0.01),
        provider("small", context_window=8192),
        {"name": "echo", "type": "echowire", "endpoint": "http://127.0.0.1:9/v1/echo", "model": "echo-1",
         "context_window": 4096, "cost_per_1k_tokens": 0},
    ]}


def row_of(listing: str, plugin: str) -> str:
    return next(line for line in listing.splitlines() if line.startswith(plugin + " "))


def test_modelbroker_plugins_and_check_see_both(examples_site, provider, write_config, run_cli, subprocess_env):
    config = write_config(both_plugins_config(provider))
    env = examples_site.env(subprocess_env)
    listed = run_cli("plugins", "--config", str(config), env=env)
    assert listed.returncode == 0, listed.stderr
    for plugin, (columns, hooks) in ROWS.items():
        row = row_of(listed.stdout, plugin)
        assert row.split()[:4] == columns, row
        assert hooks in " ".join(row.split()) and row.rstrip().endswith("yes"), row

    checked = run_cli("check", "--config", str(config), env=env)
    assert checked.returncode == 0, checked.stderr
    assert "echo/echo-1  echowire" in checked.stdout
    assert "  prompt_size (configured): echo/echo-1 -> small/small -> large/large" in checked.stdout.splitlines()


def test_modelbroker_plugins_shows_disabled_examples(examples_site, provider, write_config, run_cli,
                                                     subprocess_env):
    config = write_config({"plugins": {"disabled": ["prompt_size"]}, "providers": [provider("small")]})
    env = examples_site.env(subprocess_env, MODELBROKER_DISABLED_PLUGINS="echowire")
    listed = run_cli("plugins", "--config", str(config), env=env)
    assert listed.returncode == 0, listed.stderr
    for plugin in ROWS:
        assert row_of(listed.stdout, plugin).rstrip().endswith("no (disabled)")


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_examples_own_tests_pass_against_the_installed_package(examples_site, subprocess_env, example):
    """What a plugin author runs: ``pytest`` in the distribution's folder, with it installed."""
    env = examples_site.env(subprocess_env, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")  # no hypothesis, schemathesis
    done = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=examples_site.sources[example], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"^\d+ passed in ", done.stdout, re.M), done.stdout[-2000:]


@pytest.mark.parametrize("example", EXAMPLES)
def test_readme_configs_are_valid_and_links_resolve(repo_root, example):
    readme = repo_root / "examples" / example / "README.md"
    text = readme.read_text(encoding="utf-8")
    configs = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert configs, f"{readme} shows no providers.yaml"
    for block in configs:
        parse_config(block, environ={})
    for target in re.findall(r"\]\(([^)\s#]+)", text):
        if not re.match(r"[a-z]+:", target):
            assert (readme.parent / target).exists(), f"{readme} links to {target}, which does not exist"
