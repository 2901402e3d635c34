"""modelbroker installed from a wheel, as a user gets it: one import package, ``modelbroker``.

The wheel is built from a copy of the sources (setuptools writes build/ and .egg-info
where it builds) and installed, without its dependencies, into a fresh virtualenv that
sees this environment's site-packages for them (a .pth line: the editable install's
own finder is not processed there). Everything then runs from an empty folder, so that
the checkout's core/ and plugins/ folders cannot be imported by accident.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

from modelbroker.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("core", "plugins"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "main.py"):
        shutil.copy(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--disable-pip-version-check", "-w", str(dist), str(source)],
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = dist.glob("modelbroker-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The fresh virtualenv's python, with the wheel installed."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    (Path(purelib) / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    done = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index",
                           "--disable-pip-version-check", "--quiet", str(wheel)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MODELBROKER_", "PYTHON"))}
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_the_wheel_holds_one_package_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"modelbroker"}
    for data in ("modelbroker/py.typed", "modelbroker/plugins/dashboard/static/dashboard.html",
                 "modelbroker/_cli/templates/strategy/plugin.py.tmpl"):
        assert data in names


def test_only_modelbroker_is_importable(installed, tmp_path):
    for name in ("core", "plugins", "main"):
        done = run(installed, "-c", f"import {name}", cwd=tmp_path)
        assert done.returncode == 1 and f"No module named '{name}'" in done.stderr, (name, done.stderr)
    done = run(installed, "-c", "import modelbroker; from modelbroker import hookimpl; print(modelbroker.__file__)",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "site-packages/modelbroker/__init__.py" in done.stdout


def test_modelbroker_plugins_works_in_an_empty_folder(installed, tmp_path):
    done = run(installed, "-m", "modelbroker", "plugins", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:] if line.strip()}
    assert rows["priority"].split()[1:4] == ["modelbroker", modelbroker_version(), "modelbroker.plugins.priority"]


def test_the_demo_answers(installed, tmp_path):
    port = free_port()
    script = installed.parent / "modelbroker"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MODELBROKER_", "PYTHON"))}
    demo = subprocess.Popen([str(script), "demo", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        answer = None
        deadline = time.monotonic() + 30
        while answer is None and time.monotonic() < deadline and demo.poll() is None:
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/generate", json={"prompt": "Hello"}, timeout=5)
            except httpx.HTTPError:
                time.sleep(0.2)
        assert answer is not None, demo.stdout.read().decode() if demo.poll() is not None else "no answer in 30 s"
        assert answer.status_code == 200, answer.text
        assert answer.json()["response"] == "Fake reply from demo-small: Hello"
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        demo.wait(timeout=30)


def modelbroker_version() -> str:
    from modelbroker import __version__

    return __version__
