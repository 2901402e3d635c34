"""providers.yaml: reading, ``${VAR}`` interpolation and validation.

The file is parsed once into ``GatewayConfig``. Every problem is reported as a
``ConfigError`` whose message names the file, the entry and the field, for
example ``providers.yaml: providers[1].priority: must be an integer``.
"""

from __future__ import annotations

import collections.abc
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelbroker._config.messages import ConfigError, location, message
from modelbroker._config.providers import GatewayConfig

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> GatewayConfig:
    """Read, interpolate and validate a providers.yaml file."""
    path = Path(path)
    label = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found; set MODELBROKER_CONFIG to your providers.yaml "
            "or run from the directory that holds it"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; set MODELBROKER_CONFIG to the path of providers.yaml") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start + 1} cannot be read); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, label=label, environ=os.environ if environ is None else environ)


def parse_config(text: str, *, label: str = "providers.yaml", environ: Any = None) -> GatewayConfig:
    """Validate the YAML text of a providers.yaml; ``label`` names it in messages."""
    environ = os.environ if environ is None else environ
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: the top level must be a mapping with a 'providers:' list")
    _refuse_own_fields(data, label)
    _check_values(data, label)
    warnings: list[str] = []
    data = _interpolate_top(data, label, environ, warnings)
    try:
        config = GatewayConfig.model_validate({**data, "source": label, "warnings": warnings})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, label, data)) from None
    _check_unique_ids(config, label)
    config.warnings.extend(_unpriced(config, label))
    return config


def _unpriced(config: GatewayConfig, label: str) -> list[str]:
    """One warning per enabled provider whose price no one knows: it costs 0."""
    return [
        f"{label}: providers[{i}] ({p.id}): model {p.model!r} costs 0: {p.unpriced}; give its price with "
        "cost_per_1k_tokens, or cost_per_1k_input_tokens and cost_per_1k_output_tokens "
        "(cost_per_1k_tokens: 0 for a free model)"
        for i, p in enumerate(config.providers) if p.enabled and p.unpriced
    ]


def _interpolate_top(data: dict, label: str, environ: Any, warnings: list[str]) -> dict:
    """Replace ``${VAR}`` everywhere; a provider with an unset variable is disabled."""
    result = {}
    for key, value in data.items():
        if key == "providers" and isinstance(value, list):
            result[key] = [
                _interpolate_provider(entry, f"{label}: providers[{i}]", environ, warnings)
                for i, entry in enumerate(value)
            ]
            continue
        missing: list[str] = []
        result[key] = _interpolate(value, environ, missing)
        if missing:
            raise ConfigError(
                f"{label}: {key}: environment variable {missing[0]} is not set; "
                f"export it or write ${{{missing[0]}:-default}}"
            )
    return result


def _interpolate_provider(entry: Any, where: str, environ: Any, warnings: list[str]) -> Any:
    missing: list[str] = []
    entry = _interpolate(entry, environ, missing)
    if missing and isinstance(entry, dict):
        names = ", ".join(dict.fromkeys(missing))
        reason = f"environment variable {names} is not set"
        label = entry.get("id") or f"{entry.get('name')}/{entry.get('model')}"
        warnings.append(f"{where} ({label}): disabled: {reason}")
        entry = {**entry, "enabled": False, "disabled_reason": reason}
    return entry


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (plain
    YAML keeps the last one, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *defaults``: the keys it brings may be overridden here
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, collections.abc.Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"{key!r} is given twice in one mapping; keep one", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


#: Values a file may expand to, aliases followed: far more than any real providers.yaml.
MAX_VALUES = 100_000


def _check_values(data: Any, label: str) -> None:
    """Refuse what ``${VAR}`` interpolation would walk into badly: a YAML alias that holds
    itself, aliases that expand past MAX_VALUES values, and a ``${`` that starts no valid
    ``${NAME}`` or ``${NAME:-default}`` (it would be sent as written, say as an API key)."""
    count = 0
    holding: set[int] = set()

    def walk(value: Any, loc: tuple) -> None:
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(f"{label}: the file expands to more than {MAX_VALUES:,} values "
                              "(YAML aliases that repeat aliases?)")
        if isinstance(value, str):
            if "${" in _VAR.sub("", value):
                raise ConfigError(
                    f"{label}: {location(loc) or 'the top level'}: a '${{' that starts no valid reference; write "
                    "${NAME} or ${NAME:-default} (NAME: letters, digits and _, not starting with a digit)")
            return
        if not isinstance(value, (list, dict)):
            return
        if id(value) in holding:
            raise ConfigError(f"{label}: {location(loc)}: a YAML alias refers to a node that holds it")
        holding.add(id(value))
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            walk(item, (*loc, key))
        holding.discard(id(value))

    walk(data, ())


def _interpolate(value: Any, environ: Any, missing: list[str]) -> Any:
    if isinstance(value, str):
        return _VAR.sub(lambda m: _lookup(m, environ, missing), value)
    if isinstance(value, list):
        return [_interpolate(v, environ, missing) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, environ, missing) for k, v in value.items()}
    return value


def _lookup(match: re.Match[str], environ: Any, missing: list[str]) -> str:
    name, default = match.group(1), match.group(2)
    if name in environ:
        return environ[name]
    if default is not None:
        return default
    missing.append(name)
    return match.group(0)  # left as written: the provider is disabled, see _interpolate_provider


UNKNOWN_FIELD = message({"type": "extra_forbidden"}) + " (docs/configuration.md lists the fields)"


def _refuse_own_fields(data: dict, label: str) -> None:
    """``source`` and ``warnings`` (top level) and a provider's ``disabled_reason`` are filled
    in by the gateway; written in providers.yaml they are unknown fields, like a typo."""
    found: list[tuple] = [(key,) for key in ("source", "warnings") if key in data]
    providers = data.get("providers")
    if isinstance(providers, list):
        found += [("providers", index, "disabled_reason") for index, entry in enumerate(providers)
                  if isinstance(entry, dict) and "disabled_reason" in entry]
    if found:
        raise ConfigError("\n".join(_problem(label, loc, UNKNOWN_FIELD, data) for loc in found))


def _describe(exc: ValidationError, label: str, data: dict) -> str:
    """One line per problem: ``file: providers[1].priority: must be an integer``."""
    return "\n".join(
        _problem(label, error["loc"], UNKNOWN_FIELD if error["type"] == "extra_forbidden" else message(error), data)
        for error in exc.errors(include_url=False, include_input=False)
    )


def _problem(label: str, loc: tuple, text: str, data: dict) -> str:
    return f"{label}: {location(loc)}: {text}{_provider_hint(loc, data)}"


def _provider_hint(loc: tuple, data: dict) -> str:
    if len(loc) >= 2 and loc[0] == "providers" and isinstance(loc[1], int):
        providers = data.get("providers") or []
        if loc[1] < len(providers) and isinstance(providers[loc[1]], dict):
            name = providers[loc[1]].get("name")
            if name:
                return f" (provider {name!r})"
    return ""


def _check_unique_ids(config: GatewayConfig, label: str) -> None:
    seen: dict[str, int] = {}
    for index, provider in enumerate(config.providers):
        if provider.id in seen:
            raise ConfigError(
                f"{label}: providers[{index}]: id {provider.id!r} is already used by "
                f"providers[{seen[provider.id]}]; give one of them a distinct 'id:'"
            )
        seen[provider.id] = index


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return problem
