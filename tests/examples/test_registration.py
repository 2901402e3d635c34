"""Strategies chosen by name, with third-party distributions installed on PYTHONPATH.

- Two distributions registering one strategy name: ``serve``, ``check`` and a reload all
  refuse, and say which two plugins (and distributions) claim it.
- A stateful strategy (its order depends on what its object has heard through
  ``on_result``): ``check`` prints the order the gateway uses for its first request,
  since both build the object the same way.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest
import yaml

from modelbroker.testing import free_port

#: Registers strategy "samename" whatever the config.
FIXED = """
from modelbroker import hookimpl


class AsListed:
    def select_provider(self, providers):
        return list(providers)


@hookimpl
def register_strategies(register):
    register("samename", AsListed)
"""

#: Registers a strategy under each name listed in its settings (aliases of the file order).
ALIASES = """
from pydantic import BaseModel

from modelbroker import hookimpl


class AliasSettings(BaseModel):
    names: list[str] = []


class Reversed:
    def select_provider(self, providers):
        return list(reversed(providers))


@hookimpl
def register_settings(register):
    register("aliases", AliasSettings)


@hookimpl
def register_strategies(register, config):
    for name in config.plugins.settings_for("aliases").names:
        register(name, Reversed)
"""

#: Strategy "rotate": each answer moves the next request on to the next provider.
ROTATE = """
from modelbroker import hookimpl


class Rotate:
    def __init__(self):
        self.answered = 0

    @hookimpl
    def on_result(self):
        self.answered += 1

    def select_provider(self, providers):
        turn = self.answered % len(providers) if providers else 0
        return providers[turn:] + providers[:turn]


@hookimpl
def register_strategies(register):
    register("rotate", Rotate)
"""


def install(site: Path, distribution: str, module: str, entry_point: str, source: str) -> None:
    """A distribution as pip leaves it in a folder: its module and its .dist-info with the entry point."""
    info = site / f"{distribution.replace('-', '_')}-1.0.dist-info"  # the folder name as pip writes it
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[modelbroker]\n{entry_point} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path):
    folder = tmp_path / "site"
    install(folder, "mb-fixed", "mb_fixed", "fixed", FIXED)
    install(folder, "mb-aliases", "mb_aliases", "aliases", ALIASES)
    install(folder, "mb-rotate", "mb_rotate", "rotate", ROTATE)
    return folder


def providers(provider) -> list[dict]:
    return [provider("a"), provider("b"), provider("c")]


CLASH = ("strategy 'samename' is registered twice: by plugin 'aliases' (mb_aliases, from mb-aliases 1.0) and by "
         "plugin 'fixed' (mb_fixed, from mb-fixed 1.0); uninstall one of them, or leave one out with "
         "plugins: {disabled: [aliases]} or {disabled: [fixed]}")


def test_one_name_from_two_distributions_stops_serve_and_check(site, provider, write_config, run_cli,
                                                             subprocess_env):
    config = write_config({"strategy": "samename", "plugins": {"aliases": {"names": ["samename"]}},
                           "providers": providers(provider)})
    env = subprocess_env(PYTHONPATH=str(site), MODELBROKER_LOG_FILE="")
    for command in (["serve", "--port", str(free_port())], ["check"]):
        done = run_cli(*command, "--config", str(config), env=env, timeout=30)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1] == f"modelbroker: {CLASH}"


def test_a_reload_that_would_register_a_name_twice_is_refused(site, provider, write_config, gateway_process,
                                                             subprocess_env):
    path = write_config({"strategy": "samename", "plugins": {"aliases": {"names": ["other"]}},
                         "providers": providers(provider)})
    gw = gateway_process(path, subprocess_env(PYTHONPATH=str(site)))
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        assert client.post("/generate", json={"prompt": "hi"}).json()["provider"] == "a/a"
        assert client.post("/generate", json={"prompt": "hi", "strategy": "other"}).json()["provider"] == "c/c"
        clashing = yaml.safe_load(path.read_text())
        clashing["plugins"]["aliases"]["names"] = ["samename"]
        path.write_text(yaml.safe_dump(clashing))
        refused = client.post("/admin/reload")
        assert refused.status_code == 400
        assert refused.json()["error"]["message"] == (
            f"reload refused, the running configuration is unchanged: {CLASH}")
        # the gateway goes on with what it had
        assert client.post("/generate", json={"prompt": "hi"}).json()["provider"] == "a/a"
        assert client.post("/generate", json={"prompt": "hi", "strategy": "other"}).json()["provider"] == "c/c"


def test_check_prints_the_order_serve_uses_for_a_stateful_strategy(site, provider, write_config, run_cli,
                                                                  gateway_process, subprocess_env):
    path = write_config({"strategy": "rotate", "providers": providers(provider)})
    env = subprocess_env(PYTHONPATH=str(site))
    checked = run_cli("check", "--config", str(path), env=env)
    assert checked.returncode == 0, checked.stderr
    assert "  rotate (configured): a/a -> b/b -> c/c" in checked.stdout.splitlines()
    gw = gateway_process(path, env)
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        answered = [client.post("/generate", json={"prompt": "hi"}).json()["provider"] for _ in range(4)]
    assert answered == ["a/a", "b/b", "c/c", "a/a"]  # the first as check said; then the object's own state
