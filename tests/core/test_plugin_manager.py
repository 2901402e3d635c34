"""core/_plugins/manager.py: plugins come from the ``modelbroker`` entry-point group.

The sample plugin in tests/fixtures/sample_plugin is installed with pip into a
folder of its own, and gateways run in subprocesses with that folder on PYTHONPATH:
the plugin is found exactly as an installed third-party package is.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pytest

from modelbroker._plugins.manager import make_plugin_manager
from modelbroker.testing import free_port

BUILTIN = {"priority", "cost", "openai", "file_log"}


@pytest.fixture(scope="module")
def sample_plugin(tmp_path_factory, repo_root):
    """The folder the sample plugin is pip-installed into (offline, no build isolation)."""
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(target),
         str(repo_root / "tests" / "fixtures" / "sample_plugin")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "mb_sample_plugin-0.1.0.dist-info" / "entry_points.txt").exists()
    return target


def run_cli(args, env, cwd, timeout=60):
    return subprocess.run([sys.executable, "-m", "modelbroker", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def shortest_config(provider, **top):
    return {
        "strategy": "shortest",
        "reliability": {"retries": 0},
        **top,
        "providers": [
            provider("mid", model="medium-name", priority=1),
            provider("longest", model="a-much-longer-model-name", priority=0),
            provider("short", model="xl", priority=3),
            provider("tie", model="yy", priority=2),
        ],
    }


# --- in process ------------------------------------------------------------------------------


def test_builtins_load_from_this_projects_entry_points():
    pm = make_plugin_manager()
    names = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    assert BUILTIN <= names
    assert all(pm.sources[name].distribution == "modelbroker" for name in BUILTIN)
    assert pm.sources["priority"].module == "modelbroker.plugins.priority"


def test_without_entry_points_nothing_is_loaded():
    pm = make_plugin_manager(load_entrypoints=False)
    assert pm.list_name_plugin() == []
    assert {"register_strategies", "register_adapters", "on_result"} <= set(vars(pm.hook))


def test_blocked_plugins_are_not_loaded():
    pm = make_plugin_manager(blocked=["cost", "file_log"])
    assert pm.get_plugin("cost") is None and pm.get_plugin("file_log") is None
    assert pm.is_blocked("cost") and pm.is_blocked("file_log")
    assert pm.get_plugin("priority") is not None and pm.get_plugin("openai") is not None


# --- a real third-party plugin, installed with pip ---------------------------------------------


def test_installed_plugin_is_used_for_routing(sample_plugin, provider, upstream, write_config, gateway_process,
                                              subprocess_env, tmp_path, read_log):
    config = write_config(shortest_config(provider))
    log_file = tmp_path / "app.log"
    env = subprocess_env(PYTHONPATH=str(sample_plugin), MODELBROKER_LOG_FILE=str(log_file))
    gw = gateway_process(config, env)
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        answer = client.post("/generate", json={"prompt": "hello"}, headers={"x-request-id": "via-plugin"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["provider"] == "short/xl"
        upstream.set_behavior("*", {"kind": "status", "status": 500})
        failed = client.post("/generate", json={"prompt": "hello"})
    assert failed.status_code == 502
    assert [a["provider"] for a in failed.json()["error"]["attempts"]] == [
        "short/xl", "tie/yy", "mid/medium-name", "longest/a-much-longer-model-name",
    ]
    gw.stop()  # SIGTERM: uvicorn shuts down gracefully, then exits by the signal it caught
    assert gw.proc.returncode in (0, -signal.SIGTERM), gw.output()
    assert "Application shutdown complete" in gw.output()
    assert [(line["request_id"], line["provider"]) for line in read_log(log_file)][0] == ("via-plugin", "short")


def test_installed_plugin_is_listed_and_checked(sample_plugin, provider, upstream, write_config, subprocess_env,
                                                repo_root):
    config = write_config(shortest_config(provider))
    env = subprocess_env(PYTHONPATH=str(sample_plugin))
    listed = run_cli(["plugins", "--config", str(config)], env, repo_root)
    assert listed.returncode == 0, listed.stderr
    row = next(" ".join(line.split()) for line in listed.stdout.splitlines() if line.startswith("shortest "))
    assert row == "shortest mb-sample-plugin 0.1.0 mb_sample_plugin strategy shortest register_strategies yes"

    checked = run_cli(["check", "--config", str(config)], env, repo_root)
    assert checked.returncode == 0, checked.stderr
    assert "  shortest (configured): short/xl -> tie/yy -> mid/medium-name -> longest/a-much-longer-model-name" in (
        checked.stdout.splitlines())


def test_without_the_plugin_the_strategy_is_unknown(provider, upstream, write_config, subprocess_env, repo_root,
                                                    installed_strategies):
    config = write_config(shortest_config(provider))
    done = run_cli(["check", "--config", str(config)], subprocess_env(), repo_root)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"modelbroker: {config.name}: strategy: unknown strategy 'shortest'; "
        f"installed strategies: {', '.join(installed_strategies)}"
    )


def test_disabling_the_installed_plugin(sample_plugin, provider, upstream, write_config, subprocess_env, repo_root,
                                        installed_strategies):
    config = write_config(shortest_config(provider, plugins={"disabled": ["shortest"]}))
    env = subprocess_env(PYTHONPATH=str(sample_plugin), MODELBROKER_LOG_FILE="")
    done = run_cli(["serve", "--config", str(config), "--port", str(free_port())], env, repo_root)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert message == (
        f"modelbroker: {config.name}: strategy: unknown strategy 'shortest'; "
        f"installed strategies: {', '.join(installed_strategies)}"
    )
    assert "shortest" not in installed_strategies

    listed = run_cli(["plugins", "--config", str(write_config(shortest_config(
        provider, strategy="priority", plugins={"disabled": ["shortest"]}), name="priority.yaml"))], env, repo_root)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("shortest "))
    assert "no (disabled)" in row
