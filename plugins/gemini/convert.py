"""OpenAI chat requests -> Google Gemini ``generateContent``, for ``plugins.gemini``.

Pure functions on dicts, no I/O: the request body from a ``ChatRequest``, every OpenAI
field Gemini has carried over (``answer.py`` converts the answer back). Not a plugin
itself: ``plugins.gemini`` imports it.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelbroker import ChatRequest, ErrorKind, ProviderError

#: JSON Schema keywords Gemini's OpenAPI-style ``parameters`` rejects.
UNSUPPORTED_SCHEMA_KEYS = frozenset({"$schema", "additionalProperties", "$id", "$defs", "definitions"})


def request_body(request: ChatRequest, options: dict[str, Any]) -> dict[str, Any]:
    """The generateContent body for ``request`` (the model is in the URL, not here)."""
    system, contents = convert_messages(request.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    config = generation_config(request, options)
    if config:
        body["generationConfig"] = config
    if request.extra.get("tools"):
        declarations = convert_tools(request.extra["tools"])
        if declarations:
            body["tools"] = [{"functionDeclarations": declarations}]
            choice = convert_tool_choice(request.extra.get("tool_choice"))
            if choice is not None:
                body["toolConfig"] = {"functionCallingConfig": choice}
    return body


#: OpenAI sampling fields Gemini has under another name in ``generationConfig``.
SAMPLING = (("top_p", "topP"), ("seed", "seed"), ("presence_penalty", "presencePenalty"),
            ("frequency_penalty", "frequencyPenalty"))


def generation_config(request: ChatRequest, options: dict[str, Any]) -> dict[str, Any]:
    extra = request.extra
    config: dict[str, Any] = {}
    max_tokens = request.max_tokens or extra.get("max_completion_tokens") or options.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    for name, gemini_name in SAMPLING:
        if extra.get(name) is not None:
            config[gemini_name] = extra[name]
    stop = extra.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    n = extra.get("n")
    if isinstance(n, int) and n > 1:
        config["candidateCount"] = n
    top = extra.get("top_logprobs")
    if extra.get("logprobs") or top:
        config["responseLogprobs"] = True
        if isinstance(top, int) and top > 0:
            config["logprobs"] = top
    config.update(response_format(extra.get("response_format")))
    return config


def response_format(value: Any) -> dict[str, Any]:
    """OpenAI's ``response_format`` as Gemini's: JSON output, and for ``json_schema`` the schema as
    ``responseJsonSchema``, which takes JSON Schema as OpenAI clients write it (``additionalProperties``,
    ``$defs``/``$ref``, ``anyOf``, type lists); ``responseSchema``, Gemini's OpenAPI subset, refuses those."""
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in ("json_object", "json_schema"):
        return {}
    config: dict[str, Any] = {"responseMimeType": "application/json"}
    spec = value.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if kind == "json_schema" and isinstance(schema, dict):
        config["responseJsonSchema"] = schema
    return config


def convert_messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The system instruction text and the ``contents`` list.

    Assistant turns have role ``model``; a tool result is a ``functionResponse``
    part in a user turn, named after the call it answers. Consecutive turns of
    one role are merged.
    """
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for the tool results
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text(message.get("content"))
            if text:
                system.append(text)
            continue
        if role == "assistant":
            role, parts = "model", _model_parts(message, names)
        elif role == "tool":
            role, parts = "user", [_function_response(message, names)]
        else:
            role, parts = "user", content_parts(message.get("content"))
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return "\n\n".join(system), contents


def content_parts(content: Any) -> list[dict[str, Any]]:
    """Text parts, and inline images from ``data:`` URLs. Gemini fetches no image by URL (its
    ``fileData`` takes files uploaded to Google), so an http(s) image is refused, not dropped:
    a 400 of this attempt, which another provider may take."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and part.get("text"):
            parts.append({"text": part["text"]})
        elif part.get("type") == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
                mime, _, data = url[5:].partition(";base64,")
                parts.append({"inlineData": {"mimeType": mime, "data": data}})
            else:
                raise ProviderError(
                    ErrorKind.STATUS, "the gemini adapter sends images only as data: URLs (base64); Gemini "
                    "fetches no image from a URL: send the image inline, or route the request elsewhere",
                    status=400, code="unsupported_input", param="messages",
                    detail="images must be sent as data: URLs (base64) to this model")
    return parts


def _model_parts(message: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    parts = content_parts(message.get("content"))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        name = str(function.get("name", ""))
        names[str(call.get("id", ""))] = name
        parts.append({"functionCall": {"name": name, "args": _json_object(function.get("arguments"), "args")}})
    return parts


def _function_response(message: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    name = names.get(str(message.get("tool_call_id", ""))) or str(message.get("name") or "tool")
    return {"functionResponse": {"name": name, "response": _json_object(_text(message.get("content")), "content")}}


def _json_object(value: Any, key: str) -> dict[str, Any]:
    """``value`` as the JSON object Gemini wants: parsed if it is one, else ``{key: value}``."""
    if isinstance(value, dict):
        return value
    try:
        parsed = orjson.loads(value) if value else {}
    except (orjson.JSONDecodeError, TypeError):
        parsed = None
    return parsed if isinstance(parsed, dict) else {key: value}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def convert_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """OpenAI function tools as Gemini function declarations (best effort on the schema)."""
    declarations = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not function.get("name"):
            continue
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters"):
            declaration["parameters"] = _schema(function["parameters"])
        declarations.append(declaration)
    return declarations


def _schema(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _schema(v) for k, v in value.items() if k not in UNSUPPORTED_SCHEMA_KEYS}
    if isinstance(value, list):
        return [_schema(v) for v in value]
    return value


def convert_tool_choice(choice: Any) -> dict[str, Any] | None:
    """``auto``/``required``/``none``/a named function as a ``functionCallingConfig``."""
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return {"mode": "ANY", "allowedFunctionNames": [name]} if name else None
    return {"auto": {"mode": "AUTO"}, "required": {"mode": "ANY"}, "none": {"mode": "NONE"}}.get(choice)
