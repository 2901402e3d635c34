"""``modelbroker plugin new NAME --kind KIND``: each kind of plugin it writes installs with pip,
is found through its entry point, and passes its own tests with the testing kit."""

from __future__ import annotations

import subprocess
import sys

import pytest

KINDS = ["strategy", "adapter", "guard", "logger"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_plugin_installs_and_passes_its_own_tests(kind, tmp_path, run_cli, subprocess_env, pip_install):
    name = f"my_{kind}"
    written = run_cli("plugin", "new", name, "--kind", kind, "--directory", str(tmp_path), env=subprocess_env())
    assert written.returncode == 0, written.stderr
    source = tmp_path / f"modelbroker-my-{kind}"
    assert written.stdout.startswith(f"wrote {source}: the {kind} plugin '{name}', with its tests.")
    assert sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()) == [
        "README.md", f"modelbroker_{name}/__init__.py", "pyproject.toml", "tests/conftest.py", f"tests/test_{name}.py"]

    site = tmp_path / "site"
    pip_install([source], site)
    env = subprocess_env(PYTHONPATH=str(site), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    listed = run_cli("plugins", env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(" ".join(line.split()) for line in listed.stdout.splitlines() if line.startswith(name + " "))
    assert row.startswith(f"{name} modelbroker-my-{kind.replace('_', '-')} 0.1.0 modelbroker_{name} ")
    assert row.endswith(" yes")

    tested = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=source, env=env, capture_output=True,
                            text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-2000:]
    assert " passed" in tested.stdout and "failed" not in tested.stdout


def test_a_name_that_cannot_be_a_module_is_refused(tmp_path, run_cli, subprocess_env):
    done = run_cli("plugin", "new", "My-Plugin", "--kind", "guard", "--directory", str(tmp_path), env=subprocess_env())
    assert done.returncode == 2
    assert done.stderr.strip() == ("modelbroker: plugin name 'My-Plugin': use lower-case letters, digits and _, "
                                   "starting with a letter (it becomes the module modelbroker_<name>)")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_left_alone(tmp_path, run_cli, subprocess_env):
    (tmp_path / "modelbroker-taken").mkdir()
    done = run_cli("plugin", "new", "taken", "--kind", "logger", "--directory", str(tmp_path), env=subprocess_env())
    assert done.returncode == 2
    assert done.stderr.strip() == (f"modelbroker: {tmp_path / 'modelbroker-taken'} already exists; "
                                   "remove it or choose another name")
    assert list((tmp_path / "modelbroker-taken").iterdir()) == []
