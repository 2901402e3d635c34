"""OpenAI chat format <-> Anthropic Messages API, for ``plugins.anthropic``.

Pure functions on dicts, no I/O: the request body from a ``ChatRequest``; an
Anthropic message as an OpenAI ``chat.completion``; Anthropic stream events as
OpenAI ``chat.completion.chunk`` pieces (``StreamState``). Not a plugin itself:
``plugins.anthropic`` imports it.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from modelbroker import ChatRequest, Completion, ErrorKind, ProviderError, StreamChunk, Usage, safe_message
from modelbroker.plugins.anthropic.json_mode import JsonTool, force, json_tool

DEFAULT_MAX_TOKENS = 1024
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                  "tool_use": "tool_calls", "pause_turn": "stop", "refusal": "content_filter"}


# --- request ------------------------------------------------------------------------


def request_body(model: str, request: ChatRequest, options: dict[str, Any]) -> dict[str, Any]:
    """The Messages API body for ``request``; OpenAI fields Anthropic lacks are left out."""
    extra = request.extra
    system, messages = convert_messages(request.messages)
    body: dict[str, Any] = {
        "model": model,
        # Anthropic requires max_tokens; OpenAI clients may send either name or neither.
        "max_tokens": request.max_tokens or extra.get("max_completion_tokens")
        or options.get("max_tokens", DEFAULT_MAX_TOKENS),
        "messages": messages,
    }
    if system:
        body["system"] = system
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)  # OpenAI allows up to 2, Anthropic 1
    if extra.get("top_p") is not None:
        body["top_p"] = extra["top_p"]
    stop = extra.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if extra.get("tools"):
        body["tools"] = convert_tools(extra["tools"])
        choice = convert_tool_choice(extra.get("tool_choice"), extra.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    answer_tool = json_tool(extra)
    if answer_tool is not None:
        force(body, answer_tool)
    if isinstance(extra.get("user"), str):
        body["metadata"] = {"user_id": extra["user"]}
    if request.stream:
        body["stream"] = True
    return body


def convert_messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The ``system`` string and the ``messages`` list.

    System and developer messages become the top-level ``system``. A tool result
    becomes a ``tool_result`` block in a user message. Consecutive messages of one
    role are merged, as Anthropic wants tool results together and roles alternating.
    """
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text(message.get("content"))
            if text:
                system.append(text)
            continue
        role, blocks = _blocks(message)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return "\n\n".join(system), out


def _blocks(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The Anthropic role and content blocks of one OpenAI message."""
    if message.get("role") == "tool":
        result = {"type": "tool_result", "tool_use_id": str(message.get("tool_call_id", "")),
                  "content": _text(message.get("content"))}
        return "user", [result]
    role = "assistant" if message.get("role") == "assistant" else "user"
    blocks = content_blocks(message.get("content"))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""),
                       "input": _arguments(function.get("arguments"))})
    return role, blocks


def content_blocks(content: Any) -> list[dict[str, Any]]:
    """Text and image blocks from an OpenAI content (a string or a list of parts)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image_url":
            image = _image(part.get("image_url"))
            if image is not None:
                blocks.append(image)
    return blocks


def _image(image_url: Any) -> dict[str, Any] | None:
    """An image block from a ``data:`` URL (base64) or an http(s) URL; None otherwise."""
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        return None
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _arguments(arguments: Any) -> dict[str, Any]:
    """A tool call's JSON arguments as the object Anthropic's ``input`` must be."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def convert_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """OpenAI function tools as Anthropic tools (name, description, input_schema)."""
    out = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not function.get("name"):
            continue
        converted = {"name": function["name"],
                     "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
        if function.get("description"):
            converted["description"] = function["description"]
        out.append(converted)
    return out


def convert_tool_choice(choice: Any, parallel: Any = None) -> dict[str, Any] | None:
    """``auto``/``required``/``none``/a named function as Anthropic's ``tool_choice``."""
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        converted = {"type": "tool", "name": name} if name else {"type": "auto"}
    elif choice in ("auto", "required", "none"):
        converted = {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}
    else:
        converted = {"type": "auto"} if parallel is False else None
    if converted is not None and parallel is False and converted["type"] != "none":
        converted["disable_parallel_tool_use"] = True
    return converted


# --- response -------------------------------------------------------------------------


def parse_usage(usage: Any) -> Usage:
    """Anthropic usage. Its ``input_tokens`` leaves out cached ones; the prompt here has them all."""
    if not isinstance(usage, dict):
        return Usage()
    cache_read = usage.get("cache_read_input_tokens")
    prompt = _int(usage.get("input_tokens")) + _int(cache_read) + _int(usage.get("cache_creation_input_tokens"))
    completion = _int(usage.get("output_tokens"))
    return Usage(prompt, completion, prompt + completion,
                 cached_tokens=cache_read if isinstance(cache_read, int) else None)


def openai_usage(usage: Usage) -> dict[str, Any]:
    """``usage`` in OpenAI's shape, for the relayed chat.completion."""
    out: dict[str, Any] = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                           "total_tokens": usage.total_tokens}
    if usage.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    return out


def parse_message(data: Any, fallback_model: str, answer_tool: JsonTool | None = None) -> Completion:
    """An Anthropic message as a Completion whose ``raw`` is an OpenAI chat.completion.

    ``answer_tool``: the tool that carries the request's ``response_format``; its input is
    the answer's text.
    """
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise ProviderError(ErrorKind.MALFORMED, "not an Anthropic message (no content list)")
    blocks = [b for b in data["content"] if isinstance(b, dict)]
    uses = [b for b in blocks if b.get("type") == "tool_use"]
    answer = next((b for b in uses if b.get("name") == answer_tool.name), None) if answer_tool else None
    if answer is not None:
        text = answer_tool.text(answer.get("input"))
        uses.remove(answer)
    else:
        text = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
    calls = [_tool_call(b) for b in uses]
    model = str(data.get("model") or fallback_model)
    usage = parse_usage(data.get("usage"))
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    finish = "stop" if answer is not None and not calls else finish_reason(data.get("stop_reason"))
    raw = {
        "id": str(data.get("id") or "msg"), "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": openai_usage(usage),
    }
    return Completion(text=text, model=model, usage=usage, raw=raw)


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if stop_reason else "stop"


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {"id": str(block.get("id", "")), "type": "function",
            "function": {"name": str(block.get("name", "")), "arguments": arguments}}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


# --- stream ------------------------------------------------------------------------------


class StreamState:
    """Turns one stream's Anthropic events into OpenAI chunks, remembering what spans events:
    the message id and model, the prompt usage from ``message_start``, which content block
    is which tool call, and whether ``message_stop`` has come."""

    def __init__(self, model: str, secret: str | None = None, answer_tool: JsonTool | None = None) -> None:
        self.secret = secret
        self.id = "msg"
        self.model = model
        self.created = int(time.time())
        self.start_usage: dict[str, Any] = {}
        self.tools: dict[int, int] = {}  # content block index -> OpenAI tool_calls index
        self.done = False
        #: The tool carrying ``response_format`` (its input is streamed as the answer's text),
        #: its content block's index once it starts, and its input so far if it must be unwrapped.
        self.answer_tool = answer_tool
        self.answer_index: int | None = None
        self.answer_parts: list[str] = []

    def feed(self, event: dict[str, Any]) -> list[StreamChunk]:
        """The chunks for one event; raises ProviderError for an ``error`` event."""
        handler = getattr(self, f"_on_{event.get('type')}", None)
        return handler(event) if handler is not None else []  # ping and unknown events

    def _on_message_start(self, event: dict[str, Any]) -> list[StreamChunk]:
        message = event.get("message") if isinstance(event.get("message"), dict) else {}
        self.id = str(message.get("id") or self.id)
        self.model = str(message.get("model") or self.model)
        self.start_usage = message.get("usage") if isinstance(message.get("usage"), dict) else {}
        return [self._chunk({"role": "assistant", "content": ""})]

    def _on_content_block_start(self, event: dict[str, Any]) -> list[StreamChunk]:
        block = event.get("content_block") if isinstance(event.get("content_block"), dict) else {}
        if block.get("type") == "tool_use" and self.answer_tool and block.get("name") == self.answer_tool.name:
            self.answer_index = _int(event.get("index"))
            return []
        if block.get("type") == "tool_use":
            index = self.tools.setdefault(_int(event.get("index")), len(self.tools))
            call = {"index": index, "id": str(block.get("id", "")), "type": "function",
                    "function": {"name": str(block.get("name", "")), "arguments": ""}}
            return [self._chunk({"tool_calls": [call]}, has_content=True)]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]}, text=block["text"])]
        return []

    def _on_content_block_delta(self, event: dict[str, Any]) -> list[StreamChunk]:
        delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]}, text=delta["text"])]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            if self.answer_index is not None and _int(event.get("index")) == self.answer_index:
                return self._answer_piece(delta["partial_json"])
            index = self.tools.get(_int(event.get("index")), 0)
            call = {"index": index, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]}, has_content=True)]
        return []  # thinking and signature deltas are not part of an OpenAI answer

    def _answer_piece(self, partial_json: str) -> list[StreamChunk]:
        """The answer tool's input as text: as it comes, or whole at its end if it must be unwrapped."""
        if self.answer_tool.wrapped:
            self.answer_parts.append(partial_json)
            return []
        return [self._chunk({"content": partial_json}, text=partial_json)]

    def _on_content_block_stop(self, event: dict[str, Any]) -> list[StreamChunk]:
        if not self.answer_parts or _int(event.get("index")) != self.answer_index:
            return []
        try:
            arguments = orjson.loads("".join(self.answer_parts))
        except orjson.JSONDecodeError:
            raise ProviderError(ErrorKind.MALFORMED, "the answer tool's streamed input is not JSON") from None
        self.answer_parts = []
        text = self.answer_tool.text(arguments)
        return [self._chunk({"content": text}, text=text)]

    def _on_message_delta(self, event: dict[str, Any]) -> list[StreamChunk]:
        delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
        chunks = []
        if delta.get("stop_reason"):
            finish = finish_reason(delta["stop_reason"])
            if self.answer_index is not None and not self.tools:
                finish = "stop"  # the model answered through the tool the request's response_format became
            chunks.append(self._chunk({}, finish=finish))
        if isinstance(event.get("usage"), dict):  # cumulative; may repeat the input counts
            usage = parse_usage({**self.start_usage, **event["usage"]})
            raw = {**self._base(), "choices": [], "usage": openai_usage(usage)}
            chunks.append(StreamChunk(raw=raw, usage=usage, model=self.model))
        return chunks

    def _on_message_stop(self, event: dict[str, Any]) -> list[StreamChunk]:
        self.done = True
        return []

    def _on_error(self, event: dict[str, Any]) -> list[StreamChunk]:
        error = event.get("error") if isinstance(event.get("error"), dict) else {}
        kind = error.get("type")
        message = f"the upstream sent an error event: {error.get('message') or kind}"
        raise ProviderError(ErrorKind.ERROR_EVENT, safe_message(message, self.secret),
                            code=str(kind) if kind else None)

    def _base(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}

    def _chunk(self, delta: dict[str, Any], *, text: str = "", has_content: bool = False,
               finish: str | None = None) -> StreamChunk:
        raw = {**self._base(), "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return StreamChunk(raw=raw, text=text, has_content=has_content or bool(text),
                           model=self.model, finish_reason=finish)
