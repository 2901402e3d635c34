"""Anthropic's Messages API to the gateway's chat format, and a chat answer back to a message.

The request, for providers that speak OpenAI's chat format (an Anthropic provider gets the
body as sent, ``ChatRequest.native``): ``system`` becomes a system message, ``tool_use``
blocks assistant ``tool_calls``, ``tool_result`` blocks ``tool`` messages, images
``image_url`` parts; ``tools``, ``tool_choice``, ``stop_sequences``, ``top_p`` and
``metadata.user_id`` the chat fields of the same meaning. What chat has no place for is
left out for those providers: ``top_k`` (a sampling hint), ``thinking`` and the blocks
of earlier thinking, ``cache_control`` and the blocks of earlier server-tool calls. What
only Anthropic can do is not left out but named (``native_only``): a server tool in
``tools``, ``mcp_servers``, a file uploaded to Anthropic, a document chat has no part for;
such a request goes only to an Anthropic provider. Pure functions on dicts, no I/O.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from modelbroker import APIError, Completion, Usage

#: OpenAI finish reasons as Anthropic stop reasons.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def bad(field: str, problem: str) -> APIError:
    return APIError(400, f"{field}: {problem}", code="invalid_field", param=field)


class Invalid(Exception):
    """A problem in a block, ``field`` relative to where it was found (``""``, ``".source"``).

    Raised up through the loops, each putting its index in front, so that the location is
    written only for a bad request, not for every block of every good one.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem

    def within(self, prefix: str) -> Invalid:
        return Invalid(prefix + self.field, self.problem)


# --- request ---------------------------------------------------------------------------


def chat_messages(data: dict[str, Any], unsent: list[str] | None = None) -> list[dict[str, Any]]:
    """The ``system`` and ``messages`` of a Messages request as OpenAI chat messages.

    A block that only Anthropic can read (a file uploaded to it, a document chat has no part
    for) is named in ``unsent``, when given, rather than sent.
    """
    try:
        out = system_messages(data.get("system"))
    except Invalid as exc:
        raise bad("system" + exc.field, exc.problem) from None
    for i, message in enumerate(data["messages"]):
        content = message["content"]
        try:
            if isinstance(content, str):
                out.append({"role": message["role"], "content": content})
            elif not isinstance(content, list):
                raise Invalid("", "must be a string or a list of content blocks")
            elif message["role"] == "assistant":
                out.extend(_assistant(content))
            else:
                out.extend(_user(content, unsent, f"messages[{i}].content"))
        except Invalid as exc:
            raise bad(f"messages[{i}].content{exc.field}", exc.problem) from None
    return out


def native_only(data: dict[str, Any], unsent: list[str]) -> str | None:
    """Why only an Anthropic provider can carry this request, or None when chat can too."""
    for i, tool in enumerate(data.get("tools") or ()):
        if tool.get("type") not in (None, "custom"):
            return f"tools[{i}] is Anthropic's server tool {tool['type']}"
    if data.get("mcp_servers"):
        return "mcp_servers asks Anthropic to call MCP servers"
    if data.get("container"):
        return "container names an Anthropic code-execution container"
    if unsent:
        return unsent[0]
    return None


def system_messages(system: Any) -> list[dict[str, Any]]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list):
        raise Invalid("", "must be a string or a list of text blocks")
    texts = []
    for j, block in enumerate(system):
        try:
            texts.append(_text(block))
        except Invalid as exc:
            raise exc.within(f"[{j}]") from None
    return [{"role": "system", "content": "\n\n".join(texts)}] if texts else []


def _user(blocks: list[Any], unsent: list[str] | None = None, where: str = "") -> list[dict[str, Any]]:
    """Tool results first, each a ``tool`` message (as Anthropic puts them first too), then the
    rest as one user message; images a tool gave back go into that message. An image or a
    document with no chat form is named in ``unsent``."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        try:
            if kind == "text":
                parts.append({"type": "text", "text": _text(block)})
            elif kind == "tool_result":
                result, images = _tool_result(block)
                results.append(result)
                parts.extend(images)
            elif (part := _part(_kind(block), block)) is not None:
                parts.append(part)
            elif kind in ("image", "document") and unsent is not None:
                unsent.append(f"{where}[{j}] is {_described(block)}")
        except Invalid as exc:
            raise exc.within(f"[{j}]") from None
    if parts:
        content = parts[0]["text"] if len(parts) == 1 and parts[0]["type"] == "text" else parts
        results.append({"role": "user", "content": content})
    return results


def _assistant(blocks: list[Any]) -> list[dict[str, Any]]:
    texts, calls = [], []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        try:
            if kind == "text":
                texts.append(_text(block))
            elif kind == "tool_use":
                calls.append(_tool_call(block))
            else:
                _kind(block)
        except Invalid as exc:
            raise exc.within(f"[{j}]") from None
    if not texts and not calls:
        return []
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _kind(block: Any) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise Invalid("", "must be a content block: an object with a 'type'")
    return block["type"]


def _text(block: Any) -> str:
    text = block.get("text") if isinstance(block, dict) and block.get("type") == "text" else None
    if not isinstance(text, str):
        raise Invalid("", "must be a text block: {\"type\": \"text\", \"text\": \"...\"}")
    return text


def _part(kind: str, block: dict[str, Any]) -> dict[str, Any] | None:
    """A chat content part for a block of a user message; None for one chat has no part for."""
    if kind == "text":
        return {"type": "text", "text": _text(block)}
    if kind == "image":
        return _image(block)
    if kind == "document":
        return _document(block)
    return None


def _image(block: dict[str, Any]) -> dict[str, Any] | None:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source.get("media_type"), str) and isinstance(source.get("data"), str):
        return {"type": "image_url", "image_url": {"url": f"data:{source['media_type']};base64,{source['data']}"}}
    if kind == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    if kind == "file":
        return None  # a Files API id, which only Anthropic can resolve
    raise Invalid(".source", "must be {\"type\": \"base64\", \"media_type\", \"data\"} or {\"type\": \"url\", \"url\"}")


def _document(block: dict[str, Any]) -> dict[str, Any] | None:
    """A plain-text document as text, a base64 PDF as a chat ``file`` part; others have no chat form."""
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    kind, data = source.get("type"), source.get("data")
    if kind == "text" and isinstance(data, str):
        return {"type": "text", "text": data}
    if kind == "content":
        text = _joined(source.get("content"))
        return {"type": "text", "text": text} if text else None
    if kind == "base64" and isinstance(data, str) and source.get("media_type") == "application/pdf":
        name = block.get("title") if isinstance(block.get("title"), str) else "document.pdf"
        return {"type": "file", "file": {"filename": name, "file_data": f"data:application/pdf;base64,{data}"}}
    return None


def _described(block: dict[str, Any]) -> str:
    """An image or document block chat has no part for, in a few words."""
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if source.get("type") == "file":
        return f"a file uploaded to Anthropic ({block['type']} with source.type 'file')"
    return f"a {block['type']} of source.type {source.get('type')!r} that only Anthropic reads"


def _joined(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
    return ""


def _tool_result(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A ``tool`` message, and the images of the result (a tool message holds only text)."""
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise Invalid(".tool_use_id", "is required: the id of the tool_use block this answers")
    content = block.get("content")
    images = []
    if isinstance(content, list):
        for j, item in enumerate(content):
            if isinstance(item, dict) and item.get("type") == "image":
                try:
                    image = _image(item)
                except Invalid as exc:
                    raise exc.within(f".content[{j}]") from None
                if image is not None:
                    images.append(image)
    text = _joined(content)
    if block.get("is_error") is True:
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}, images


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
        raise Invalid("", "a tool_use block needs a string 'id' and 'name'")
    arguments = block.get("input", {})
    if not isinstance(arguments, dict):
        raise Invalid(".input", "must be an object")
    return {"id": block["id"], "type": "function",
            "function": {"name": block["name"], "arguments": orjson.dumps(arguments).decode()}}


def chat_extra(data: dict[str, Any]) -> dict[str, Any]:
    """The chat fields for ``tools``, ``tool_choice``, ``stop_sequences``, ``top_p`` and ``metadata``."""
    extra: dict[str, Any] = {}
    tools = chat_tools(data.get("tools"))
    choice = data.get("tool_choice")
    if choice and choice["type"] == "tool" and not choice.get("name"):
        raise bad("tool_choice.name", "is required when tool_choice.type is 'tool'")
    if tools:
        extra["tools"] = tools
        if choice:
            extra["tool_choice"] = (TOOL_CHOICES[choice["type"]] if choice["type"] != "tool"
                                    else {"type": "function", "function": {"name": choice["name"]}})
            if choice.get("disable_parallel_tool_use") is True:
                extra["parallel_tool_calls"] = False
    if data.get("stop_sequences"):
        extra["stop"] = data["stop_sequences"]
    if data.get("top_p") is not None:
        extra["top_p"] = data["top_p"]
    user = (data.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user:
        extra["user"] = user
    return extra


def chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The client's own tools as chat functions; Anthropic's server tools have none."""
    out = []
    for i, tool in enumerate(tools or ()):
        if tool.get("type") not in (None, "custom"):
            continue
        schema = tool.get("input_schema")
        if schema is None:
            raise bad(f"tools[{i}].input_schema", "is required for a tool of your own")
        function: dict[str, Any] = {"name": tool["name"], "parameters": schema}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


# --- answer ----------------------------------------------------------------------------------


def message_body(completion: Completion, message_id: str) -> dict[str, Any]:
    """A chat answer as an Anthropic message."""
    choice = ((completion.raw or {}).get("choices") or [{}])[0]
    message = choice.get("message") or {}
    text = message.get("content") if completion.raw is not None else completion.text
    content: list[dict[str, Any]] = []
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        content.append({"type": "text", "text": message["refusal"]})
    content.extend(tool_use(call) for call in message.get("tool_calls") or () if isinstance(call, dict))
    return {
        "id": message_id, "type": "message", "role": "assistant", "model": completion.model,
        "content": content, "stop_reason": stop_reason(choice.get("finish_reason")), "stop_sequence": None,
        "usage": anthropic_usage(completion.usage),
    }


def stop_reason(finish_reason: Any) -> str:
    return STOP_REASONS.get(finish_reason, "end_turn")


def tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {"type": "tool_use", "id": tool_id(call.get("id")), "name": str(function.get("name") or ""),
            "input": arguments(function.get("arguments"))}


def tool_id(call_id: Any) -> str:
    """Anthropic's ``toolu_`` id for a chat tool call's id (kept inside it, so the client's
    tool_result names the same call when it comes back)."""
    if not isinstance(call_id, str) or not call_id:
        return f"toolu_{secrets.token_hex(12)}"
    return call_id if call_id.startswith("toolu_") else f"toolu_{call_id}"


def arguments(text: Any) -> dict[str, Any]:
    """A tool call's JSON arguments as the object ``input`` must be ({} if they are not one)."""
    if isinstance(text, dict):
        return text
    try:
        value = orjson.loads(text or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def anthropic_usage(usage: Usage) -> dict[str, int]:
    """Anthropic's usage: its ``input_tokens`` leave out the prompt tokens read from the cache."""
    cached = usage.cached_tokens or 0
    return {"input_tokens": max(0, usage.prompt_tokens - cached), "output_tokens": usage.completion_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}
