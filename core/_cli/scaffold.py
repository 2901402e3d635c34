"""``modelbroker plugin new NAME --kind KIND``: a ready distribution for a new plugin.

It writes ``modelbroker-NAME/``: a pyproject.toml with the entry point, the plugin's module,
a README, and tests that pass with modelbroker's testing kit as soon as the package is
installed. The author then edits it. The files come from ``templates/`` (``$name`` and the
like are filled in with ``string.Template``).
"""

from __future__ import annotations

import re
import string
from importlib import resources
from pathlib import Path

from modelbroker import __version__
from modelbroker._config.messages import ConfigError

#: kind -> (what it is, in the README's first line; how to use it, in the README).
KINDS = {
    "strategy": ("A routing strategy: it orders the providers for each request.",
                 "Choose it in providers.yaml with `strategy: $name`, or for one request with "
                 '`"strategy": "$name"` on `/generate` or `"model": "$name"` on `/v1/chat/completions`.'),
    "adapter": ("An adapter: it calls the providers of `type: $name`.",
                "Give a provider `type: $name` in providers.yaml."),
    "guard": ("A guard: it refuses requests before any provider is tried.",
              "It runs for every generation request once installed; its words are `plugins: $name: blocked:`."),
    "logger": ("A logger: it records every attempt.",
               "It runs once installed; its file is `plugins: $name: path:` in providers.yaml."),
}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def new_plugin(name: str, kind: str, directory: Path) -> Path:
    """Write the distribution for plugin ``name`` of ``kind`` in ``directory``; returns its folder."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"plugin name {name!r}: use lower-case letters, digits and _, starting with a letter "
                          "(it becomes the module modelbroker_<name>)")
    if kind not in KINDS:
        raise ConfigError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    distribution = "modelbroker-" + name.replace("_", "-")
    target = directory / distribution
    if target.exists():
        raise ConfigError(f"{target} already exists; remove it or choose another name")
    major = int(__version__.split(".")[0])
    description, usage = KINDS[kind]
    values = {"name": name, "module": f"modelbroker_{name}", "distribution": distribution, "kind": kind,
              "class_name": "".join(part.capitalize() for part in name.split("_")), "major": major,
              "next_major": major + 1}
    values["description"] = string.Template(description).substitute(values)
    values["usage"] = string.Template(usage).substitute(values)
    files = {
        "pyproject.toml": "common/pyproject.toml.tmpl",
        "README.md": "common/README.md.tmpl",
        f"modelbroker_{name}/__init__.py": f"{kind}/plugin.py.tmpl",
        "tests/conftest.py": "common/conftest.py.tmpl",
        f"tests/test_{name}.py": f"{kind}/test.py.tmpl",
    }
    templates = resources.files("modelbroker._cli") / "templates"
    for path, template in files.items():
        text = string.Template(templates.joinpath(template).read_text(encoding="utf-8")).substitute(values)
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        (target / path).write_text(text, encoding="utf-8")
    return target
