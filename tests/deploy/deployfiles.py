"""What the tests of deploy/ share: the files read once, the Dockerfile parsed, and the
gateway's own facts (its settings, its routes, its CLI) to check them against.

No container runtime is needed: every test reads the files, and the few that run
something run the gateway or a tool from PyPI (hadolint, kubernetes-validate) here.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

from modelbroker._config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
PROVIDERS = DEPLOY / "providers.yaml"
DEPLOYMENT_MD = ROOT / "docs" / "deployment.md"
#: The Kubernetes version the manifests are checked against (a schema that kubernetes-validate bundles).
KUBERNETES_VERSION = "1.33.0"


@dataclass
class Instruction:
    keyword: str
    text: str  # the arguments, continuation lines joined
    stage: int  # 0 for the first FROM


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, comments left out and continued lines joined."""
    instructions, pending, stage = [], "", -1
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        keyword, _, text = whole.strip().partition(" ")
        keyword = keyword.upper()
        stage += keyword == "FROM"
        instructions.append(Instruction(keyword, text.strip(), stage))
    return instructions


def image_env() -> dict[str, str]:
    """The final stage's ENV, as ``NAME=value`` pairs."""
    final = max(i.stage for i in dockerfile())
    env: dict[str, str] = {}
    for instruction in dockerfile():
        if instruction.keyword == "ENV" and instruction.stage == final:
            env.update(pair.split("=", 1) for pair in shlex.split(instruction.text))
    return env


def exec_form(instruction: Instruction) -> list[str]:
    """``CMD ["a", "b"]`` -> ["a", "b"] (after any ``--option=`` of HEALTHCHECK and its ``CMD``)."""
    text = instruction.text
    if instruction.keyword == "HEALTHCHECK":
        text = text[text.index(" CMD ") + len(" CMD "):]
    return json.loads(text)


def only(keyword: str) -> Instruction:
    """The one ``keyword`` instruction of the final stage (the image that runs)."""
    final = max(i.stage for i in dockerfile())
    (found,) = [i for i in dockerfile() if i.keyword == keyword and i.stage == final]
    return found


def load_yaml_documents(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def gateway_services() -> dict[str, dict]:
    """The compose services that run the gateway: those built from deploy/Dockerfile."""
    return {name: service for name, service in compose()["services"].items()
            if (service.get("build") or {}).get("dockerfile") == "deploy/Dockerfile"}


def manifests() -> dict[str, dict]:
    """``kind/name`` -> the Kubernetes object, from every file in deploy/kubernetes/."""
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in load_yaml_documents(path):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def setting_names() -> set[str]:
    """Every ``MODELBROKER_*`` variable the gateway reads: a field of Settings each."""
    prefix = Settings.model_config["env_prefix"]
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def variables_in(text: str) -> set[str]:
    """The ``${NAME}`` references in a providers.yaml's values (with or without a ``:-default``)."""

    def strings(value) -> list[str]:
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    found = set()
    for value in strings(yaml.safe_load(text)):
        found |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}", value))
    return found


@cache
def command_help(command: str) -> str:
    """``modelbroker <command> --help``, through the CLI's entry point."""
    done = subprocess.run([sys.executable, "-m", "modelbroker", command, "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_command(argv: list[str]) -> None:
    """``argv`` is a ``modelbroker`` command that exists, and every ``--flag`` in it is one
    of that command's. ``--workers`` of ``serve`` is being added to the CLI in a change of
    its own: until it lands, its absence is an expected failure, not a pass."""
    assert argv[0] == "modelbroker", argv
    help_text = command_help(argv[1])
    flags = [arg.split("=", 1)[0] for arg in argv[2:] if arg.startswith("--")]
    missing = [flag for flag in flags if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text)]
    if missing == ["--workers"] and argv[1] == "serve":
        pytest.xfail("modelbroker serve --workers is not in the CLI yet (a pending change to core/_cli/main.py)")
    assert not missing, f"modelbroker {argv[1]} has no {missing}:\n{help_text}"


@cache
def _app():
    from modelbroker._server.app import create_app

    return create_app(Settings(config=PROVIDERS, log_file=""))


def serves(path: str, method: str = "GET") -> bool:
    """Whether a gateway built from deploy/providers.yaml, every installed plugin loaded, has a
    route for ``method path`` (asked as the app itself asks)."""
    return _app().has_route({"type": "http", "path": path, "method": method, "root_path": "", "headers": []})
