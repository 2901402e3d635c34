"""OpenAI chat format <-> Google Gemini ``generateContent``, for ``plugins.gemini``.

Pure functions on dicts, no I/O: the request body from a ``ChatRequest``; a
``GenerateContentResponse`` as an OpenAI ``chat.completion``; streamed
responses as OpenAI ``chat.completion.chunk`` pieces (``StreamState``). Not a
plugin itself: ``plugins.gemini`` imports it.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from modelbroker import ChatRequest, Completion, ErrorKind, ProviderError, StreamChunk, Usage, safe_message

FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
                      "IMAGE_SAFETY", "LANGUAGE"})
#: JSON Schema keywords Gemini's OpenAPI-style ``parameters`` rejects.
UNSUPPORTED_SCHEMA_KEYS = frozenset({"$schema", "additionalProperties", "$id", "$defs", "definitions"})


# --- request ------------------------------------------------------------------------


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


def generation_config(request: ChatRequest, options: dict[str, Any]) -> dict[str, Any]:
    extra = request.extra
    config: dict[str, Any] = {}
    max_tokens = request.max_tokens or extra.get("max_completion_tokens") or options.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if extra.get("top_p") is not None:
        config["topP"] = extra["top_p"]
    stop = extra.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
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
    """Text parts, and inline images from ``data:`` URLs (other image URLs are dropped)."""
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


# --- response -------------------------------------------------------------------------


def parse_usage(meta: Any) -> Usage:
    """``usageMetadata``. Thinking tokens count as completion tokens (they are billed as
    output, and OpenAI counts its reasoning tokens so) and are also kept apart."""
    if not isinstance(meta, dict):
        return Usage()
    prompt = _int(meta.get("promptTokenCount")) + _int(meta.get("toolUsePromptTokenCount"))
    thoughts = meta.get("thoughtsTokenCount")
    completion = _int(meta.get("candidatesTokenCount")) + _int(thoughts)
    cached = meta.get("cachedContentTokenCount")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=_int(meta.get("totalTokenCount")) or prompt + completion,
        cached_tokens=cached if isinstance(cached, int) else None,
        reasoning_tokens=thoughts if isinstance(thoughts, int) else None,
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                           "total_tokens": usage.total_tokens}
    if usage.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def first_candidate(data: Any, secret: str | None = None) -> dict[str, Any] | None:
    """The first candidate; None for a chunk with none. A blocked prompt raises ProviderError:
    a 400 (the prompt is at fault, not the provider) with code ``prompt_blocked``."""
    if not isinstance(data, dict):
        raise ProviderError(ErrorKind.MALFORMED, "not a Gemini response (not a JSON object)")
    candidates = data.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        return candidates[0]
    feedback = data.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if reason:
        message = f"the upstream answered 200 with no candidates: it blocked the prompt (blockReason {reason})"
        raise ProviderError(ErrorKind.STATUS, safe_message(message, secret), status=400,
                            code="prompt_blocked")
    return None


def candidate_parts(candidate: dict[str, Any], first_call: int = 0) -> tuple[str, list[dict[str, Any]]]:
    """The answer text (thoughts left out) and the function calls as OpenAI tool calls."""
    content = candidate.get("content") if isinstance(candidate.get("content"), dict) else {}
    parts = [p for p in content.get("parts") or () if isinstance(p, dict)]
    text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))
    calls = []
    for part in parts:
        call = part.get("functionCall")
        if isinstance(call, dict):
            arguments = orjson.dumps(call.get("args") or {}).decode()
            calls.append({"id": str(call.get("id") or f"call_{first_call + len(calls)}"), "type": "function",
                          "function": {"name": str(call.get("name", "")), "arguments": arguments}})
    return text, calls


def finish_reason(reason: Any, tool_calls: bool) -> str | None:
    if not reason:
        return None
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FILTERED:
        return "content_filter"
    return "tool_calls" if tool_calls else "stop"


def parse_response(data: Any, fallback_model: str, secret: str | None = None) -> Completion:
    """A whole GenerateContentResponse as a Completion whose ``raw`` is an OpenAI chat.completion."""
    candidate = first_candidate(data, secret)
    if candidate is None:
        raise ProviderError(ErrorKind.MALFORMED, "not a Gemini response (no candidates, no promptFeedback)")
    text, calls = candidate_parts(candidate)
    model = str(data.get("modelVersion") or fallback_model)
    usage = parse_usage(data.get("usageMetadata"))
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    finish = finish_reason(candidate.get("finishReason"), bool(calls)) or "stop"
    raw = {
        "id": str(data.get("responseId") or "gemini"), "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": openai_usage(usage),
    }
    return Completion(text=text, model=model, usage=usage, raw=raw)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


# --- stream ------------------------------------------------------------------------------


class StreamState:
    """Turns one stream's responses into OpenAI chunks. Gemini sends no end marker: the
    stream is complete once a candidate has a ``finishReason``. Usage comes with every
    response, growing; the last one seen becomes the usage chunk (``usage_chunk``)."""

    def __init__(self, model: str, secret: str | None = None) -> None:
        self.secret = secret
        self.id = "gemini"
        self.model = model
        self.created = int(time.time())
        self.started = False
        self.calls = 0
        self.finished = False
        self.usage: Usage | None = None

    def feed(self, data: Any) -> list[StreamChunk]:
        """The chunk for one response (none if it holds nothing); raises for an error event."""
        if isinstance(data, dict) and data.get("error"):
            error = data["error"]
            detail = error.get("message") or error.get("status") if isinstance(error, dict) else error
            message = safe_message(f"the upstream sent an error event: {detail}", self.secret)
            code = error.get("status") if isinstance(error, dict) else None
            raise ProviderError(ErrorKind.ERROR_EVENT, message, code=str(code) if code else None)
        candidate = first_candidate(data, self.secret)
        self.id = str(data.get("responseId") or self.id)
        self.model = str(data.get("modelVersion") or self.model)
        if isinstance(data.get("usageMetadata"), dict):
            self.usage = parse_usage(data["usageMetadata"])
        if candidate is None:
            return []
        return self._chunks(candidate)

    def _chunks(self, candidate: dict[str, Any]) -> list[StreamChunk]:
        text, calls = candidate_parts(candidate, self.calls)
        delta: dict[str, Any] = {}
        if not self.started:
            delta["role"] = "assistant"
            self.started = True
        if text:
            delta["content"] = text
        if calls:
            delta["tool_calls"] = [{"index": self.calls + i, **call} for i, call in enumerate(calls)]
            self.calls += len(calls)
        finish = finish_reason(candidate.get("finishReason"), self.calls > 0)
        self.finished = self.finished or finish is not None
        if not delta and finish is None:
            return []
        raw = {**self._base(), "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return [StreamChunk(raw=raw, text=text, has_content=bool(text or calls), model=self.model,
                            finish_reason=finish)]

    def usage_chunk(self) -> StreamChunk | None:
        """The usage chunk (``choices: []``) for the end of the stream, if usage was reported."""
        if self.usage is None:
            return None
        raw = {**self._base(), "choices": [], "usage": openai_usage(self.usage)}
        return StreamChunk(raw=raw, usage=self.usage, model=self.model)

    def _base(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
