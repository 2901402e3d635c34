"""core/_cli/main.py: the ``modelbroker`` command, run as the installed console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelbroker import __version__

KEY = "sk-cli-test-secret-5a6b7c8d9e0f"
URL = "http://127.0.0.1:9/v1/chat/completions"
CONFIG = f"""\
providers:
  - {{name: a, endpoint: "{URL}", model: big, priority: 1, cost_per_1k_tokens: 0.03, api_key: "${{MB_CLI_KEY}}"}}
  - {{name: b, endpoint: "{URL}", model: small, priority: 2, cost_per_1k_input_tokens: 0.001, cost_per_1k_output_tokens: 0.002}}
  - {{name: c, endpoint: "{URL}", model: tiny, priority: 0, cost_per_1k_tokens: 0, api_key: "${{MB_CLI_UNSET}}"}}
"""


@pytest.fixture(scope="module")
def modelbroker() -> Path:
    script = Path(sys.executable).with_name("modelbroker")
    assert script.exists(), "the modelbroker console script is not installed (pip install -e .)"
    return script


@pytest.fixture
def run(modelbroker, subprocess_env, repo_root):
    def run(*args: str, cwd=repo_root, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(modelbroker), *args], env=subprocess_env(**env), cwd=cwd,
                              capture_output=True, text=True, timeout=60)

    return run


def test_check_shows_providers_and_the_order_of_every_strategy(run, write_config, installed_strategies):
    config = write_config(CONFIG)
    done = run("check", "--config", str(config), MB_CLI_KEY=KEY)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{config}: valid, 3 providers, strategy 'priority'"
    split = lines.index("Prices per 1M tokens:")
    def rows_of(table):
        return {line.split()[0]: line.split() for line in table if line.startswith(("a/", "b/", "c/"))}
    rows, prices = rows_of(lines[:split]), rows_of(lines[split:])
    assert rows["a/big"][1:4] == ["openai", "1", "yes"]
    assert rows["b/small"][1:4] == ["openai", "2", "yes"]
    assert rows["c/tiny"][1:3] == ["openai", "0"]
    assert "no: environment variable MB_CLI_UNSET is not set" in " ".join(rows["c/tiny"])
    assert prices["a/big"][1:] == ["30", "30", "30", "providers.yaml"]
    assert prices["b/small"][1:] == ["1", "2", "1", "providers.yaml"]
    assert prices["c/tiny"][1:] == ["0", "0", "0", "providers.yaml"]
    assert "Order for a short prompt, by strategy:" in lines
    orders = {line.split(":")[0].strip(): line.split(": ", 1)[1] for line in lines if line.startswith("  ")}
    assert set(orders) == {s + (" (configured)" if s == "priority" else "") for s in installed_strategies}
    assert orders["priority (configured)"] == "a/big -> b/small"
    assert orders["cost"] == "b/small -> a/big"
    assert all("c/tiny" not in order for order in orders.values())
    assert KEY not in done.stdout + done.stderr


def test_check_with_strategy_cost_marks_it_configured(run, write_config):
    done = run("check", "--config", str(write_config("strategy: cost\n" + CONFIG)), MB_CLI_KEY=KEY)
    assert done.returncode == 0, done.stderr
    assert "  cost (configured): b/small -> a/big" in done.stdout.splitlines()


def test_check_with_no_enabled_provider(run, write_config):
    done = run("check", "--config", str(write_config(CONFIG.replace("${MB_CLI_KEY}", "${MB_CLI_UNSET}")
                                                       .replace("cost_per_1k_output_tokens: 0.002}",
                                                                "cost_per_1k_output_tokens: 0.002, enabled: false}"))))
    assert done.returncode == 0, done.stderr
    assert "No enabled provider: nothing to order." in done.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CONFIG.replace("priority: 2", "priority: second"),
         "modelbroker: providers.yaml: providers[1].priority: must be an integer (provider 'b')"),
        ("strategy: fastest\n" + CONFIG, "modelbroker: providers.yaml: strategy: unknown strategy 'fastest'"),
    ],
    ids=["bad-field", "unknown-strategy"],
)
def test_check_refuses_a_bad_config_in_one_line(run, write_config, text, expected):
    done = run("check", "--config", str(write_config(text)), MB_CLI_KEY=KEY)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if not line.startswith("WARNING")]
    assert line.startswith(expected)
    assert KEY not in done.stderr


def test_check_missing_file(run, tmp_path):
    done = run("check", "--config", str(tmp_path / "absent.yaml"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"modelbroker: {tmp_path / 'absent.yaml'}: file not found; set MODELBROKER_CONFIG to your "
        "providers.yaml or run from the directory that holds it"
    )


def test_check_reads_modelbroker_config(run, write_config):
    config = write_config(CONFIG)
    done = run("check", MODELBROKER_CONFIG=str(config), MB_CLI_KEY=KEY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{config}: valid, 3 providers")


def test_plugins_lists_the_builtins(run, write_config):
    done = run("plugins", "--config", str(write_config(CONFIG)))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["plugin", "distribution", "module", "registers", "hooks", "enabled"]
    rows = {line.split()[0]: " ".join(line.split()) for line in lines[2:]}
    expected = {"priority": "modelbroker.plugins.priority", "cost": "modelbroker.plugins.cost",
                "openai": "modelbroker.plugins.openai_http", "file_log": "modelbroker.plugins.file_log"}
    for name, module in expected.items():
        assert rows[name].split()[1:4] == ["modelbroker", __version__, module]
        assert rows[name].rstrip().endswith("yes")
    assert " strategy priority register_strategies " in rows["priority"]
    assert " adapter openai register_adapters, register_fake_formats " in rows["openai"]
    assert " surface messages api_routes, register_surfaces " in rows["messages"]
    assert " settings responses, surface responses " in rows["responses"]
    # the hooks of the object file_log registers in on_startup are listed too
    assert " settings file_log on_startup, register_settings; FileLogWriter: on_failure, on_result, " \
           "on_shutdown, on_stored_answer " in rows["file_log"]


def test_plugins_works_in_a_folder_without_providers_yaml(run, tmp_path):
    done = run("plugins", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:] if line.strip()}
    assert rows["priority"].rstrip().endswith("yes")
    assert done.stdout.rstrip().endswith("(providers.yaml does not exist here: plugins.disabled in it was not "
                                         "read; give one with --config)")


def test_plugins_shows_disabled_ones(run, write_config):
    done = run("plugins", "--config", str(write_config("plugins:\n  disabled: [cost]\n" + CONFIG)))
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:]}
    assert rows["cost"].rstrip().endswith("no (disabled)")
    assert rows["priority"].rstrip().endswith("yes")


def test_no_command_prints_help(run):
    done = run()
    assert done.returncode == 2
    for command in ("serve", "demo", "check", "plugins"):
        assert command in done.stdout


@pytest.mark.parametrize(("setting", "value", "expected"), [
    ("MODELBROKER_PORT", "99999", "MODELBROKER_PORT: must be <= 65535"),
    ("MODELBROKER_PORT", "-1", "MODELBROKER_PORT: must be >= 0"),
    ("MODELBROKER_MAX_BODY_BYTES", "0", "MODELBROKER_MAX_BODY_BYTES: must be > 0"),
    ("MODELBROKER_GRACEFUL_SHUTDOWN_S", "nan", "MODELBROKER_GRACEFUL_SHUTDOWN_S: must be >= 0"),
    ("MODELBROKER_DISABLED_PLUGINS", '["cost"', 'MODELBROKER_DISABLED_PLUGINS: a JSON list such as ["cost", "latency"], '
     "or names joined by commas: cost,latency"),
])
def test_a_setting_out_of_range_is_refused_in_one_line(run, write_config, setting, value, expected):
    """Before, port 99999 was logged as the address but another was listened on, a body limit of 0
    refused every request, and a shutdown delay of nan failed at shutdown with a traceback."""
    done = run("check", "--config", str(write_config(CONFIG)), MB_CLI_KEY=KEY, **{setting: value})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"modelbroker: {expected}"), done.stderr


BUILT_IN = ["serve", "demo", "check", "reload", "plugins", "plugin"]


def test_help_lists_every_command_with_its_summary(run):
    done = run("--help")
    assert done.returncode == 0
    listed = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("    ") and line.split()]
    assert listed[:len(BUILT_IN)] == BUILT_IN
    assert "Plugins add commands of their own" in done.stdout and "`modelbroker plugins`" in done.stdout


@pytest.mark.parametrize("command", BUILT_IN)
def test_every_command_explains_itself(run, command):
    done = run(command, "--help")
    assert done.returncode == 0
    usage, description = done.stdout.split("\n\n")[:2]
    assert usage.startswith(f"usage: modelbroker {command}") and description[0].isupper()
    for option in ("--host", "--port", "--config", "--workers"):
        if f"[{option} " in done.stdout:
            assert f"  {option} " in done.stdout and "MODELBROKER_" in done.stdout


def test_help_loads_no_plugin_and_no_web_framework(subprocess_env):
    """--help must be quick (bench/cli_startup.py measures it): the built-in commands are declared
    without what they run, and plugins are loaded only for a command that is not built in."""
    code = ("import sys\nfrom modelbroker._cli.main import main\n"
            "for argv in (['--help'], ['serve', '--help'], ['demo', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print([m for m in sys.modules if m.startswith(('modelbroker.plugins', 'fastapi', 'uvicorn'))])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def test_a_plugin_command_loads_the_plugins(run):
    done = run("usage", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: modelbroker usage")


def test_an_unknown_command_lists_the_plugins_commands_too(run):
    done = run("nosuch")
    assert done.returncode == 2
    assert "invalid choice: 'nosuch'" in done.stderr and "'usage'" in done.stderr and "'keys'" in done.stderr


def test_plugins_names_the_commands_each_plugin_adds(run, write_config):
    done = run("plugins", "--config", str(write_config(CONFIG)))
    rows = {line.split()[0]: " ".join(line.split()) for line in done.stdout.splitlines()[2:] if line.strip()}
    assert " command usage " in rows["ledger"]
    assert " command keys " in rows["keys"]


def test_serve_refuses_a_worker_count_below_one(run, write_config):
    done = run("serve", "--config", str(write_config(CONFIG)), "--workers", "0")
    assert done.returncode == 2
    assert done.stderr.strip() == "modelbroker: MODELBROKER_WORKERS: must be >= 1"


def test_version_is_the_package_version(run):
    import modelbroker

    done = run("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"modelbroker {modelbroker.__version__}")
