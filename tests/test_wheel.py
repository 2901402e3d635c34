"""modelbroker as a release ships it: the sdist and wheel that ``python -m build`` makes.

They are built once, offline and without build isolation, from a copy of the sources
(setuptools writes build/ and .egg-info where it builds), the wheel from the sdist as
``python -m build`` does by default, so that a file missing from the sdist breaks the wheel
too. Each is installed, without its dependencies, into a fresh virtualenv that sees this
environment's site-packages for them (a .pth line: the editable install's own finder is not
processed there). Everything then runs from an empty folder, so that the checkout's core/
and plugins/ folders cannot be imported by accident.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import httpx
import pytest

from modelbroker import __version__
from modelbroker.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180
SOURCES = ("core", "plugins", "pyproject.toml", "README.md", "LICENSE")
PACKAGE_DATA = ("core/py.typed", "plugins/dashboard/static/dashboard.html",
                "core/_cli/templates/strategy/plugin.py.tmpl")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, copy / name)
    return copy


@pytest.fixture(scope="module")
def dists(source, tmp_path_factory) -> dict[str, Path]:
    """``{"wheel": ..., "sdist": ...}``, from one run of ``python -m build``."""
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = out.glob("modelbroker-*.whl")
    (sdist,) = out.glob("modelbroker-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module", params=["wheel", "sdist"])
def installed(request, dists, tmp_path_factory) -> Path:
    """A fresh virtualenv's python, with the wheel, or the sdist, installed."""
    env_dir = tmp_path_factory.mktemp(f"venv-{request.param}")
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    (Path(purelib) / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # An sdist is built on the way in, offline: with this environment's setuptools, not the old one
    # that ensurepip puts in a Python 3.11 virtualenv (it predates the `license = "MIT"` form).
    subprocess.run([str(python), "-m", "pip", "uninstall", "--yes", "--quiet", "setuptools"],
                   capture_output=True, timeout=TIMEOUT, check=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation",
                           "--disable-pip-version-check", "--quiet", str(dists[request.param])],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=60)


def clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith(("MODELBROKER_", "PYTHON"))}


def test_the_wheel_holds_one_package_its_data_and_the_license(dists):
    names = zipfile.ZipFile(dists["wheel"]).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"modelbroker"}
    for data in ("modelbroker/py.typed", "modelbroker/plugins/dashboard/static/dashboard.html",
                 "modelbroker/_cli/templates/strategy/plugin.py.tmpl",
                 f"modelbroker-{__version__}.dist-info/licenses/LICENSE"):
        assert data in names


def test_the_sdist_holds_every_source_file_and_the_license(dists, source):
    top = f"modelbroker-{__version__}"
    names = {name.removeprefix(f"{top}/") for name in tarfile.open(dists["sdist"]).getnames()}
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO", *PACKAGE_DATA} <= names
    modules = {path.relative_to(source).as_posix() for top in ("core", "plugins") for path in (source / top).rglob("*.py")}
    assert modules - names == set()


def test_the_metadata_version_is_modelbroker_version(dists):
    wheel = zipfile.ZipFile(dists["wheel"])
    metadata = Parser().parsestr(wheel.read(f"modelbroker-{__version__}.dist-info/METADATA").decode())
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata["License-File"] == "LICENSE"
    with tarfile.open(dists["sdist"]) as sdist:
        pkg_info = Parser().parsestr(sdist.extractfile(f"modelbroker-{__version__}/PKG-INFO").read().decode())
    assert pkg_info["Version"] == __version__


def test_the_version_is_read_without_importing_the_package(tmp_path):
    """A release built with build isolation has none of the dependencies: setuptools must find
    ``__version__`` by reading core/__init__.py, never by running it."""
    from setuptools.config.expand import read_attr

    (tmp_path / "core").mkdir()
    text = (ROOT / "core" / "__init__.py").read_text(encoding="utf-8")
    (tmp_path / "core" / "__init__.py").write_text(text + "\nraise RuntimeError('imported')\n", encoding="utf-8")
    assert read_attr("modelbroker.__version__", {"modelbroker": "core"}, tmp_path) == __version__


def test_only_modelbroker_is_importable(installed, tmp_path):
    for name in ("core", "plugins", "main"):
        done = run(installed, "-c", f"import {name}", cwd=tmp_path)
        assert done.returncode == 1 and f"No module named '{name}'" in done.stderr, (name, done.stderr)
    done = run(installed, "-c", "import modelbroker, importlib.metadata as m; "
               "print(modelbroker.__file__, modelbroker.__version__, m.version('modelbroker'))", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where, version, installed_version = done.stdout.split()
    assert where.endswith("site-packages/modelbroker/__init__.py")
    assert version == installed_version == __version__


def test_modelbroker_plugins_works_in_an_empty_folder(installed, tmp_path):
    done = run(installed, "-m", "modelbroker", "plugins", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:] if line.strip()}
    assert rows["priority"].split()[1:4] == ["modelbroker", __version__, "modelbroker.plugins.priority"]


def test_the_demo_answers(installed, tmp_path):
    port = free_port()
    script = installed.parent / "modelbroker"
    demo = subprocess.Popen([str(script), "demo", "--port", str(port)], cwd=tmp_path, env=clean_env(),
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
