"""The provider files in examples/providers/: each one passes ``modelbroker check`` as a
user runs it, with made-up keys in the environment, and never prints a key; the table in
examples/providers/README.md names each file and the variables it reads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROVIDERS = Path(__file__).resolve().parents[2] / "examples" / "providers"
README = PROVIDERS / "README.md"
# The vendors of issue #21, item 9, and the file of each.
VENDORS = {
    "OpenAI": "openai.yaml",
    "Anthropic": "anthropic.yaml",
    "Gemini": "gemini.yaml",
    "Groq": "groq.yaml",
    "Together": "together.yaml",
    "OpenRouter": "openrouter.yaml",
    "Mistral": "mistral.yaml",
    "DeepSeek": "deepseek.yaml",
    "Azure OpenAI": "azure-openai.yaml",
    "AWS Bedrock": "bedrock.yaml",
    "Ollama": "ollama.yaml",
    "vLLM": "vllm.yaml",
    "LM Studio": "lmstudio.yaml",
}
FILES = sorted(PROVIDERS.glob("*.yaml"))
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def variables(path: Path) -> dict[str, bool]:
    """Each ${NAME} the file reads, and whether it has a default."""
    found: dict[str, bool] = {}
    for name, default in REFERENCE.findall(path.read_text(encoding="utf-8")):
        found[name] = found.get(name, True) and bool(default)
    return found


def fake_value(name: str) -> str:
    return f"fake-{name.lower().replace('_', '-')}-4f2c9a"  # a host-name-safe value, for the Azure resource too


def table() -> dict[str, dict[str, str]]:
    """README.md's table: vendor -> {"file": ..., "type": ..., "variables": ...}."""
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[1].startswith("["):
            rows[cells[0]] = {"file": re.sub(r"\[(.*?)\]\(.*\)", r"\1", cells[1]), "type": cells[2].strip("`"),
                              "variables": cells[4]}
    return rows


def check(path: Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {key: value for key, value in os.environ.items()
            if not key.startswith(("MODELBROKER_", "AWS_", "AZURE_")) and not key.endswith(("_API_KEY", "_URL"))}
    return subprocess.run([sys.executable, "-m", "modelbroker", "check", "--config", str(path)],
                          cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=60)


def provider_ids(path: Path) -> list[str]:
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    return [entry.get("id", f"{entry['name']}/{entry['model']}") for entry in entries]


def test_every_vendor_has_a_file_and_a_row():
    assert {path.name for path in FILES} == set(VENDORS.values())
    assert {vendor: row["file"] for vendor, row in table().items()} == VENDORS


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_check_accepts_the_file_and_never_prints_a_key(path, tmp_path):
    # Every variable without a default, and the optional keys (a URL keeps its default).
    env = {name: fake_value(name) for name, has_default in variables(path).items()
           if not has_default or name.endswith(("_KEY", "_TOKEN"))}
    done = check(path, tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{path.name}: valid, " in done.stdout
    providers_table = done.stdout.split("Prices per 1M tokens:", 1)[0]  # the prices' table names them again
    rows = {line.split()[0]: line for line in providers_table.splitlines() if line.strip()}
    for provider in provider_ids(path):
        assert rows[provider].split()[-1] == "yes", rows[provider]
    assert "Order for a short prompt" in done.stdout
    for name, value in env.items():
        if name.endswith(("_KEY", "_TOKEN", "_BEDROCK")):
            assert value not in done.stdout + done.stderr, f"{name}'s value was printed"


LOCAL_SERVERS = {"ollama.yaml", "vllm.yaml", "lmstudio.yaml"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_each_cloud_model_is_priced_by_the_catalogue_and_each_local_one_is_free(path, tmp_path):
    """The cloud files give no price: every model they name is one genai-prices knows, so none
    costs 0 by mistake (a retired or misspelt model id would); the local servers state 0."""
    env = {name: fake_value(name) for name, has_default in variables(path).items() if not has_default}
    done = check(path, tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    prices = done.stdout.split("Prices per 1M tokens:", 1)[1].split("\n\n", 1)[0]
    rows = {line.split()[0]: line for line in prices.splitlines()[3:] if line.strip()}
    for provider in provider_ids(path):
        if path.name in LOCAL_SERVERS:
            assert rows[provider].split()[1:5] == ["0", "0", "0", "providers.yaml"], rows[provider]
        else:
            assert "genai-prices" in rows[provider] and float(rows[provider].split()[2]) > 0, rows[provider]
    if path.name not in LOCAL_SERVERS:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
        assert not [key for entry in entries for key in entry if key.startswith("cost_per_1k")]


@pytest.mark.parametrize("path", [p for p in FILES if not all(variables(p).values())], ids=lambda p: p.stem)
def test_without_its_key_each_provider_is_disabled_naming_the_variable(path, tmp_path):
    required = sorted(name for name, has_default in variables(path).items() if not has_default)
    done = check(path, tmp_path, {})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No enabled provider" in done.stdout
    for provider in provider_ids(path):
        line = next(line for line in done.stdout.splitlines() if line.startswith(provider + " "))
        named = re.search(r"no: environment variables? ([\w, ]+?) (?:is|are) not set", line)
        assert named and sorted(named.group(1).split(", ")) == required, line
        assert provider in done.stderr and "disabled: environment variable" in done.stderr


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_readme_names_each_files_variables_and_type(vendor):
    row = table()[vendor]
    path = PROVIDERS / row["file"]
    assert set(re.findall(r"`(\w+)`", row["variables"])) == set(variables(path))
    types = {entry.get("type", "openai") for entry in yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]}
    assert types == {row["type"]}


def test_the_readme_links_resolve():
    """Every link to a file of the repository points at one (links to web pages are not checked)."""
    for target in re.findall(r"\]\(([^)\s]+)\)", README.read_text(encoding="utf-8")):
        if target.startswith(("https://", "http://")):
            continue
        file, _, _ = target.partition("#")
        assert (PROVIDERS / file).resolve().exists(), target
