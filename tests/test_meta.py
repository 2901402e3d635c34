"""The test suite and the project themselves: every hook in core/hookspecs.py has a
``test_hook_<name>`` test, and every package folder is in pyproject.toml's package list."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from modelbroker import hookspecs

TESTS = Path(__file__).resolve().parent


def hook_names() -> list[str]:
    marker = f"{hookspecs.hookspec.project_name}_spec"
    return sorted(name for name, obj in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(obj, marker))


def defined_test_functions() -> set[str]:
    names = set()
    for path in TESTS.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                names.add(node.name)
    return names


DEFINED = defined_test_functions()


def test_the_hooks_are_found():
    assert {"register_strategies", "register_adapters", "on_result", "on_failure"} <= set(hook_names())


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_has_a_test(hook):
    assert f"test_hook_{hook}" in DEFINED, f"no test named test_hook_{hook} under tests/"


def test_every_package_folder_is_installed():
    """setuptools maps core/ to modelbroker and plugins/ to modelbroker.plugins from an explicit
    list: a folder left out of it would be missing from the wheel."""
    tomllib = pytest.importorskip("tomllib")
    root = TESTS.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in (("core", "modelbroker"), ("plugins", "modelbroker.plugins")):
        for init in (root / top).rglob("__init__.py"):
            parts = init.parent.relative_to(root / top).parts
            found.add(".".join((name, *parts)))
    assert found == listed
