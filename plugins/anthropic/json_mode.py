"""OpenAI's ``response_format`` (``json_object``, ``json_schema``) on Anthropic, as a forced tool.

The Messages API has no ``response_format``. Its own structured outputs need a beta header
and one of the newest models; a tool does not: the JSON schema becomes the ``input_schema``
of a tool the model is made to call (``tool_choice``), and the tool's input comes back as the
answer's JSON text, with ``finish_reason`` ``stop``, whole or streamed. Anthropic requires an
``input_schema`` whose root is an object; any other schema is wrapped under ``value`` and
unwrapped from the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

NAME = "json_response"
#: The name used instead when the client has a tool of its own called ``json_response``.
SPARE_NAME = "modelbroker_json_response"
WRAPPER = "value"


@dataclass(frozen=True, slots=True)
class JsonTool:
    """The tool that carries one request's ``response_format``."""

    name: str
    #: The schema's root was not an object: the answer is the input's ``value``.
    wrapped: bool
    definition: dict[str, Any] = field(compare=False)

    def text(self, arguments: Any) -> str:
        """The answer's JSON text, from the tool's input."""
        if self.wrapped and isinstance(arguments, dict):
            arguments = arguments.get(WRAPPER)
        return orjson.dumps(arguments if arguments is not None else {}).decode()


def json_tool(extra: dict[str, Any]) -> JsonTool | None:
    """The tool for ``extra["response_format"]``, or None when the request asks for no JSON."""
    response_format = extra.get("response_format") if extra else None
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        schema: dict[str, Any] = {"type": "object"}
        spec: dict[str, Any] = {}
    elif kind == "json_schema":
        spec = response_format.get("json_schema") if isinstance(response_format.get("json_schema"), dict) else {}
        schema = spec.get("schema") if isinstance(spec.get("schema"), dict) else {"type": "object"}
    else:
        return None
    taken = {(tool.get("function") or {}).get("name") for tool in extra.get("tools") or () if isinstance(tool, dict)}
    name = SPARE_NAME if NAME in taken else NAME
    wrapped = schema.get("type") != "object"
    if wrapped:
        schema = {"type": "object", "properties": {WRAPPER: schema}, "required": [WRAPPER]}
    return JsonTool(name, wrapped, {"name": name, "description": _description(spec), "input_schema": schema})


def _description(spec: dict[str, Any]) -> str:
    what = "Give your whole answer by calling this tool: its input is the answer, as JSON"
    if isinstance(spec.get("name"), str):
        what += f" ({spec['name']})"
    if isinstance(spec.get("description"), str):
        what += f". {spec['description']}"
    return what


def force(body: dict[str, Any], tool: JsonTool) -> None:
    """Offer ``tool`` in ``body`` and make the model call a tool.

    With no tool of the client's, or with the client's ``tool_choice`` ``none``, the model
    must call this one. With tools of the client's, it must call one of them or this one
    (``any``), unless the client named a tool itself, which stands.
    """
    tools = body.setdefault("tools", [])
    choice = body.get("tool_choice") or {}
    tools.append(tool.definition)
    if len(tools) == 1 or choice.get("type") == "none":
        forced: dict[str, Any] = {"type": "tool", "name": tool.name}
    elif choice.get("type") == "tool":
        return
    else:
        forced = {"type": "any"}
    if choice.get("disable_parallel_tool_use"):
        forced["disable_parallel_tool_use"] = True
    body["tool_choice"] = forced
