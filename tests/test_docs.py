"""The documentation keeps up with the code.

Every hook has a section in docs/hooks.md headed by its signature; every
providers.yaml field and every MODELBROKER_* setting is in docs/configuration.md;
the README holds the two commands .ci/run extracts; the examples in the docs
still parse; local links point at files and headings that exist.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from modelbroker import hookspecs
from modelbroker._config.loading import parse_config
from modelbroker._config.messages import ConfigError
from modelbroker._config.providers import GatewayConfig, ProviderConfig
from modelbroker._config.settings import Settings
from modelbroker._routing.types import ErrorKind

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
HOOKS_MD = DOCS / "hooks.md"
CONFIGURATION_MD = DOCS / "configuration.md"
MARKDOWN_FILES = [README, *sorted(DOCS.glob("*.md"))]

#: The two README commands, byte for byte; .ci/run runs them from a clean checkout.
CI_COMMANDS = {
    "install-and-run": "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && modelbroker demo",
    "test": ". .venv/bin/activate && pip install -e '.[test]' && pytest",
}

#: Put this line right before a ```yaml block that is meant to be rejected.
INVALID_CONFIG_MARKER = "<!-- invalid-config -->"


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def hook_specs() -> dict[str, object]:
    """Every function in modelbroker.hookspecs that carries the pluggy spec marker."""
    marker = f"{hookspecs.hookspec.project_name}_spec"
    return {
        name: function
        for name, function in vars(hookspecs).items()
        if inspect.isfunction(function) and hasattr(function, marker)
    }


def sections(markdown: str, level: int) -> dict[str, str]:
    """Heading text -> the text up to the next heading of the same or a higher level."""
    found: dict[str, str] = {}
    heading, body = None, []
    in_fence = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else re.match(r"^(#+) (.*)$", line)
        if match and len(match.group(1)) <= level:
            if heading is not None:
                found[heading] = "\n".join(body)
            heading, body = (match.group(2).strip() if len(match.group(1)) == level else None), []
            continue
        body.append(line)
    if heading is not None:
        found[heading] = "\n".join(body)
    return found


def code_blocks(markdown: str, language: str) -> list[tuple[str, str]]:
    """(the line before the block, the block's text) for every ```language block."""
    blocks = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() == f"```{language}":
            start = index
            end = next(i for i in range(index + 1, len(lines)) if lines[i].strip().startswith("```"))
            before = next((lines[i].strip() for i in range(start - 1, -1, -1) if lines[i].strip()), "")
            blocks.append((before, "\n".join(line[_indent(lines[start]):] for line in lines[start + 1:end])))
            index = end
        index += 1
    return blocks


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def normalize(value: str) -> str:
    return re.sub(r"\s+", " ", value).strip()


# --- docs/hooks.md ------------------------------------------------------------------


def test_hookspecs_are_found():
    assert {"register_strategies", "register_adapters", "on_result", "on_failure"} <= set(hook_specs())


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_hook_has_a_section_headed_by_its_signature(name):
    spec = hook_specs()[name]
    signature = inspect.signature(spec)
    heading = f"{name}({', '.join(signature.parameters)})"
    hook_sections = sections(text(HOOKS_MD), level=3)
    assert heading in hook_sections, (
        f"docs/hooks.md has no section headed '### {heading}'; "
        f"hook headings there: {sorted(h for h in hook_sections if '(' in h)}"
    )
    body = normalize(hook_sections[heading])
    assert f"def {name}(" in body, f"the section for {name} does not show its full signature"
    for parameter in signature.parameters.values():
        typed = normalize(f"{parameter.name}: {parameter.annotation}")
        assert typed in body, f"the signature in the section for {name} lacks '{typed}'"
    assert normalize(f"-> {signature.return_annotation}") in body


def test_no_section_for_a_hook_that_does_not_exist():
    specs = hook_specs()
    for heading in sections(text(HOOKS_MD), level=3):
        match = re.fullmatch(r"(\w+)\(.*\)", heading)
        if match:
            assert match.group(1) in specs, f"docs/hooks.md documents '{heading}', which is not a hook"


def test_every_error_kind_is_documented():
    hooks = text(HOOKS_MD)
    for kind in ErrorKind:
        assert f"`{kind.value}`" in hooks, f"docs/hooks.md does not describe ErrorKind {kind.name}"


# --- docs/configuration.md ------------------------------------------------------------


def documented_fields(model: type[BaseModel]) -> list[str]:
    """The fields a user can write (fields marked ``exclude=True`` are internal)."""
    return [name for name, field in model.model_fields.items() if not field.exclude]


@pytest.mark.parametrize("field", documented_fields(ProviderConfig))
def test_every_provider_field_is_documented(field):
    headings = [normalize(h) for h in sections(text(CONFIGURATION_MD), level=3)]
    assert any(f"`{field}`" in h for h in headings), (
        f"docs/configuration.md has no '### `{field}`' heading for the provider field {field}"
    )


def test_every_top_level_and_nested_field_is_documented():
    configuration = text(CONFIGURATION_MD)
    for name in documented_fields(GatewayConfig):
        assert f"`{name}`" in configuration, f"docs/configuration.md does not mention the top-level key {name}"
        annotation = GatewayConfig.model_fields[name].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for field in documented_fields(annotation):
                assert f"`{field}`" in configuration, (
                    f"docs/configuration.md does not mention {name}.{field}"
                )


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented(field):
    variable = f"MODELBROKER_{field.upper()}"
    assert variable in text(CONFIGURATION_MD), f"docs/configuration.md does not document {variable}"


# --- README.md ------------------------------------------------------------------------


def readme_command(marker: str) -> str | None:
    """The first command line of the code block after ``<!-- ci:marker -->``, read as .ci/run does."""
    found = in_block = False
    for line in text(README).splitlines():
        if line == f"<!-- ci:{marker} -->":
            found = True
            continue
        if found and line.startswith("```"):
            if in_block:
                return None
            in_block = True
            continue
        if found and in_block and line.strip():
            return line
    return None


@pytest.mark.parametrize("marker", sorted(CI_COMMANDS))
def test_readme_holds_the_ci_command_blocks(marker):
    readme = text(README)
    assert f"<!-- ci:{marker} -->\n```sh\n" in readme, f"README.md lacks the ci:{marker} block"
    assert readme_command(marker) == CI_COMMANDS[marker]


def test_running_the_gateway_installs_no_test_tool():
    """The Quick start's first command installs what running needs; the test extra comes with the second."""
    assert "[test]" not in readme_command("install-and-run")
    assert "'.[test]'" in readme_command("test")


def test_readme_names_every_builtin_plugin():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads(text(ROOT / "pyproject.toml"))["project"]
    readme = text(README)
    for name, module in project["entry-points"]["modelbroker"].items():
        path = module.replace(".", "/") + ".py"
        assert path in readme or f"`{name}`" in readme, f"README.md does not mention the built-in plugin {name}"


# --- examples and links -------------------------------------------------------------------


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda p: p.name)
def test_python_examples_compile(path):
    for _, block in code_blocks(text(path), "python"):
        compile(block, f"{path.name} example", "exec")


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda p: p.name)
def test_yaml_examples_are_valid(path):
    """Every YAML example parses; a whole providers.yaml validates, unless marked invalid."""
    top_level = set(documented_fields(GatewayConfig))
    for before, block in code_blocks(text(path), "yaml"):
        data = yaml.safe_load(block)
        if not isinstance(data, dict) or not set(data) <= top_level:
            continue  # a fragment, such as one provider entry
        if before == INVALID_CONFIG_MARKER:
            with pytest.raises(ConfigError):
                parse_config(block, environ={})
        else:
            parse_config(block, environ={})


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda p: p.name)
def test_local_links_resolve(path):
    for target in re.findall(r"\]\(([^)\s]+)\)", text(path)):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.name} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", text(linked), re.M)
            assert anchor in {slug(h) for h in headings}, f"{path.name} links to {target}: no such heading"
