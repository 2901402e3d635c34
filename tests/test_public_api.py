"""The public API is what the docs promise, and what the built-in plugins, the examples and the
docs' snippets use: nothing else.

``PUBLIC`` is the record of ``modelbroker.__all__``: a name that disappears fails here (a
breaking change, for a major version only: docs/hooks.md, "Compatibility"); a new one is
added here on purpose.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import modelbroker

ROOT = Path(__file__).resolve().parents[1]

PUBLIC = {
    "hookimpl",
    "APIError", "AttemptRecord", "ChatRequest", "Completion", "ErrorKind", "Principal", "ProviderError",
    "RateLimit", "StreamChunk", "Usage",
    "ConfigError", "GatewayConfig", "ProviderConfig", "ReliabilityConfig", "Settings", "load_settings",
    "Strategy", "Health", "cost_of", "estimate_tokens", "estimated_cost", "estimated_usage",
    "Adapter", "UpstreamHTTP", "UpstreamReply", "UpstreamStream", "open_event_stream", "single_chunk_stream",
    "sse_data", "parse_event", "status_error", "transport_error", "error_message", "redact", "safe_message",
    "snippet", "retry_after_seconds", "rate_limit_of", "duration_seconds", "int_header",
    "SharedState", "MemoryState",
    "GatewayView", "gateway_of", "caller_of", "require_admin", "error_responses", "format_table",
    "Native", "Surface", "Incoming", "Routed", "StreamEnd", "Stored", "json_object", "checked_json", "invalid_fields",
    "request_body_schema", "sse_event",
    "__version__",
}
#: The public modules besides ``modelbroker`` itself.
PUBLIC_MODULES = ("modelbroker.hookspecs", "modelbroker.testing", "modelbroker.testing.pytest_plugin",
                  "modelbroker.fake_upstream", "modelbroker.fake_upstream.formats")


def test_all_is_the_promised_list():
    missing = PUBLIC - set(modelbroker.__all__)
    assert not missing, f"public names gone from modelbroker.__all__ (a breaking change): {sorted(missing)}"
    added = set(modelbroker.__all__) - PUBLIC
    assert not added, f"new public names: add them to PUBLIC here and to docs/hooks.md: {sorted(added)}"
    assert len(modelbroker.__all__) == len(set(modelbroker.__all__))


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_name_is_there_and_documented(name):
    assert getattr(modelbroker, name) is not None
    if name != "__version__":
        assert f"`{name}`" in (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8"), (
            f"docs/hooks.md does not mention the public name {name}")


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_the_public_modules_import(module):
    assert importlib.import_module(module).__doc__


def test_the_package_is_typed():
    assert (Path(modelbroker.__file__).parent / "py.typed").exists()


# --- who imports what ---------------------------------------------------------------------------


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` of every import of a modelbroker module in ``path``
    (``import x`` gives the names ``[]``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "modelbroker":
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names
                      if alias.name.split(".")[0] == "modelbroker"]
    return found


def private_uses(path: Path, own: tuple[str, ...] = ()) -> list[str]:
    """Imports from ``path`` of anything but the public API (and the modules in ``own``)."""
    problems = []
    for module, names, line in imports(path):
        if module == "modelbroker":
            problems += [f"{path.name}:{line}: modelbroker.{name}" for name in names if name not in PUBLIC]
        elif module not in PUBLIC_MODULES and not module.startswith(own):
            problems.append(f"{path.name}:{line}: {module}")
    return problems


BUILTINS = sorted(p for p in (ROOT / "plugins").rglob("*.py"))


@pytest.mark.parametrize("path", BUILTINS, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_builtin_plugin_imports_only_what_a_third_party_could(path):
    """A plugin package may use its own modules and the built-ins' shared storage library."""
    parts = path.relative_to(ROOT / "plugins").parts
    own = (f"modelbroker.plugins.{parts[0].removesuffix('.py')}", "modelbroker.plugins.storage")
    assert private_uses(path, own) == []


EXAMPLES = sorted((ROOT / "examples").rglob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_examples_import_only_public_names(path):
    assert private_uses(path) == []


def snippets() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for block in text.split("```python\n")[1:]:
            found.append((str(path.relative_to(ROOT)), block.split("```", 1)[0]))
    return found


@pytest.mark.parametrize(("where", "code"), snippets(), ids=lambda v: v if v.endswith(".md") else "")
def test_doc_snippets_import_only_public_names(where, code, tmp_path):
    snippet = tmp_path / "snippet.py"
    snippet.write_text(code, encoding="utf-8")
    assert private_uses(snippet) == [], f"a snippet in {where} imports something private"
