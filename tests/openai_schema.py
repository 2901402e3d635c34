"""Check a JSON answer against OpenAI's published schema: ``assert_valid(body, "Model")``.

The schemas are ``tests/schemas/openai-components.json``, cut from OpenAI's OpenAPI 3.1 spec
(see tests/schemas/README.md). OpenAPI 3.1 schemas are JSON Schema 2020-12 except for a few
leftovers of the spec's 3.0 days, turned into JSON Schema once, when the file is first loaded:

- ``nullable: true`` (3.0's way to allow null, ignored by 2020-12) becomes ``"null"`` in
  ``type`` (and in ``enum``), or an ``anyOf`` with ``{"type": "null"}`` beside a ``$ref``;
- ``$recursiveRef: "#"`` (draft 2019-09, unknown to 2020-12, so it would accept anything)
  becomes a ``$ref`` to the component that declares ``$recursiveAnchor``;
- ``discriminator`` is left alone: JSON Schema ignores it, and ``oneOf``/``anyOf`` say the same.

Unions told apart by ``type`` (most of them: output items, content parts, stream events) are
explained by the member the instance's ``type`` names, so a failure names that member's field
rather than "not valid under any of the given schemas", or a field of some other member that
jsonschema's ``best_match`` found deepest. A union at the root (``ResponseStreamEvent``) is
narrowed before validating, which is also faster than trying its 58 members.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match, relevance
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMAS_FILE = Path(__file__).with_name("schemas") / "openai-components.json"
BASE_URI = "urn:openai-openapi"
PREFIX = "#/components/schemas/"
_SHOWN = 300  # characters of an instance quoted in a failure
_SAID = 2000  # characters of what jsonschema says (it may quote the instance too)
#: Keywords whose value maps names to schemas, and keywords whose value is data, not a schema.
_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_VALUES = frozenset({"enum", "const", "default", "required", "examples", "discriminator", "dependentRequired"})


def assert_valid(instance: Any, name: str) -> None:
    """Raise AssertionError, naming the failing path of ``instance`` and why, unless it is a
    valid ``name`` (a component of OpenAI's spec: ``CreateChatCompletionResponse``...)."""
    name, error = _narrowed(instance, name)
    if error is None:
        found = list(_validator(name).iter_errors(instance))
        error = _explained(max(found, key=relevance)) if found else None
    if error is not None:
        raise AssertionError(failure(error, name, instance)) from None


def errors(instance: Any, name: str) -> list[ValidationError]:
    """Every way ``instance`` fails ``name`` (empty when it is valid)."""
    return list(_validator(name).iter_errors(instance))


def failure(error: ValidationError, name: str, instance: Any) -> str:
    """A readable account: the instance's path, what the schema wanted there, where in the
    schemas, and what was there."""
    said = error.message
    if error.context:  # a union no member of which fits: what each says
        said += ": " + "; ".join(dict.fromkeys(sub.message for sub in error.context))
    return (f"not a valid OpenAI {name}: at {error.json_path}: {_short(said, _SAID)}\n"
            f"  schema: {schema_trail(name, error.absolute_schema_path)}\n"
            f"  found there: {_short(json.dumps(error.instance, default=str))}\n"
            f"  in: {_short(json.dumps(instance, default=str))}")


def schema_trail(name: str, path: Any) -> str:
    """``path`` (jsonschema leaves the ``$ref`` steps out) through the schemas, naming each
    component it enters: ``Response > allOf/2/properties/output/items/oneOf/0 > OutputMessage > ...``."""
    schemas = _document()["components"]["schemas"]
    trail, steps, current = [name], [], schemas[name]
    for step in path:
        while isinstance(current, dict) and "$ref" in current and step not in current:
            if steps:
                trail.append("/".join(steps))
                steps = []
            target = current["$ref"].rpartition("/")[2]
            trail.append(target)
            current = schemas.get(target)
        steps.append(str(step))
        current = current[step] if isinstance(current, (dict, list)) else None
    return " > ".join([*trail, "/".join(steps)] if steps else trail)


def prepared_schemas() -> dict[str, Any]:
    """Every component, as validated: in JSON Schema 2020-12 (do not change what it returns)."""
    return _document()["components"]["schemas"]


# --- loading, once ----------------------------------------------------------------------


@functools.cache
def _document() -> dict[str, Any]:
    document = json.loads(SCHEMAS_FILE.read_text(encoding="utf-8"))
    schemas = document["components"]["schemas"]
    for name, schema in schemas.items():
        schemas[name] = _as_json_schema(schema, name)
    return document


@functools.cache
def _registry() -> Registry:
    resource = Resource.from_contents(_document(), default_specification=DRAFT202012)
    return Registry().with_resource(BASE_URI, resource)


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    if name not in _document()["components"]["schemas"]:
        raise KeyError(f"no schema {name!r} in {SCHEMAS_FILE.name}; add it to ROOTS in tests/schemas/extract.py "
                       "and run it again")
    return Draft202012Validator({"$ref": f"{BASE_URI}{PREFIX}{name}"}, registry=_registry())


def _as_json_schema(schema: Any, component: str) -> Any:
    """``schema`` in JSON Schema 2020-12 (see the module docstring); ``component`` is the
    component it belongs to, the target of its ``$recursiveRef``."""
    if isinstance(schema, list):
        return [_as_json_schema(item, component) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("nullable", "$recursiveAnchor", "$recursiveRef"):
            continue
        if key in _NAMED_SCHEMAS:  # names, such as a property called "nullable", are kept
            value = {name: _as_json_schema(sub, component) for name, sub in value.items()}
        elif key not in _VALUES:
            value = _as_json_schema(value, component)
        converted[key] = value
    if schema.get("$recursiveRef") == "#":
        converted["$ref"] = PREFIX + component
    if schema.get("nullable") is True:
        converted = _or_null(converted)
    return converted


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str) and not any(key in schema for key in ("$ref", "allOf", "anyOf", "oneOf")):
        widened = {**schema, "type": [kind, "null"]}
        if "enum" in schema:
            widened["enum"] = [*schema["enum"], None]
        return widened
    return {"anyOf": [schema, {"type": "null"}]}


# --- unions told apart by "type" ---------------------------------------------------------


def _narrowed(instance: Any, name: str) -> tuple[str, ValidationError | None]:
    """For a union of components each with a constant ``type``, the member ``instance``'s
    ``type`` names (or an error saying it names none); otherwise ``name`` itself."""
    members = _members_by_type(name)
    if not members or not isinstance(instance, dict) or "type" not in instance:
        return name, None
    member = members.get(instance["type"]) if isinstance(instance["type"], str) else None
    if member is not None:
        return member, None
    known = ", ".join(sorted(members))
    error = ValidationError(f"type {instance['type']!r} is none of {name}'s: {known}", path=["type"],
                            schema_path=["anyOf"])
    return name, error


@functools.cache
def _members_by_type(name: str) -> dict[str, str]:
    """``type`` value -> member component, when every member of ``name``'s union has one."""
    schemas = _document()["components"]["schemas"]
    schema = schemas.get(name, {})
    union = schema.get("anyOf") or schema.get("oneOf")
    if not union or not all(set(item) <= {"$ref"} and item["$ref"].startswith(PREFIX) for item in union):
        return {}
    found: dict[str, str] = {}
    for item in union:
        member = item["$ref"][len(PREFIX):]
        kind = schemas[member].get("properties", {}).get("type", {})
        values = kind.get("enum") or ([kind["const"]] if "const" in kind else [])
        if len(values) != 1:
            return {}
        found[values[0]] = member
    return found


def _explained(error: ValidationError) -> ValidationError:
    """The error that says why: into each failed union, the member whose ``type`` fits."""
    while error.context and error.validator in ("anyOf", "oneOf"):
        fitting = [errs for errs in _by_member(error).values() if _fits(errs)]
        if len(fitting) != 1:
            return best_match([error])
        error = max(fitting[0], key=relevance)
    return error


def _by_member(error: ValidationError) -> dict[Any, list[ValidationError]]:
    """A failed union's errors, by the member they belong to."""
    members: dict[Any, list[ValidationError]] = {}
    for sub in error.context or ():
        members.setdefault(sub.relative_schema_path[0], []).append(sub)
    return members


def _fits(errs: list[ValidationError]) -> bool:
    """Whether a member's errors leave its ``type`` alone (in nested unions, some member's)."""
    for sub in errs:
        if list(sub.relative_path) == ["type"] and sub.validator in ("enum", "const"):
            return False
        if not sub.relative_path and sub.validator == "type":  # an object given where null is, say
            return False
        if not sub.relative_path and sub.validator in ("anyOf", "oneOf") and sub.context:
            if not any(_fits(nested) for nested in _by_member(sub).values()):
                return False
    return True


def _short(text: str, limit: int = _SHOWN) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
