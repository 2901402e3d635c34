"""Gemini's ``GenerateContentResponse`` -> OpenAI chat, for ``plugins.gemini``.

Pure functions on dicts, no I/O: a whole response as an OpenAI ``chat.completion``
(``parse_response``), streamed responses as ``chat.completion.chunk`` pieces
(``StreamState``). Each candidate is a choice (``n`` asks for several: ``candidateCount``),
with its ``logprobsResult`` as the choice's ``logprobs`` when the client asked for them;
every choice has ``logprobs`` and its message ``refusal`` (null when there are none), as
OpenAI's schema requires. ``convert.py`` builds the request.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from modelbroker import Completion, ErrorKind, ProviderError, StreamChunk, Usage, safe_message

FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
                      "IMAGE_SAFETY", "LANGUAGE"})


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


def candidates_of(data: Any, secret: str | None = None) -> list[dict[str, Any]]:
    """The candidates, in order; none for a chunk without any. A blocked prompt raises
    ProviderError: a 400 (the prompt is at fault, not the provider) with code ``prompt_blocked``."""
    if not isinstance(data, dict):
        raise ProviderError(ErrorKind.MALFORMED, "not a Gemini response (not a JSON object)")
    candidates = data.get("candidates")
    found = [c for c in candidates if isinstance(c, dict)] if isinstance(candidates, list) else []
    if found:
        return found
    feedback = data.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if reason:
        message = f"the upstream answered 200 with no candidates: it blocked the prompt (blockReason {reason})"
        raise ProviderError(ErrorKind.STATUS, safe_message(message, secret), status=400,
                            code="prompt_blocked")
    return []


def choice_index(candidate: dict[str, Any], position: int) -> int:
    """The candidate's ``index`` (JSON leaves out an index of 0), else its position."""
    index = candidate.get("index")
    return index if isinstance(index, int) and index >= 0 else position


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


def openai_logprobs(result: Any) -> dict[str, Any] | None:
    """A candidate's ``logprobsResult`` as an OpenAI choice's ``logprobs``: per token its log
    probability, bytes and the top alternatives (Gemini's ``topCandidates`` of that step)."""
    chosen = result.get("chosenCandidates") if isinstance(result, dict) else None
    if not isinstance(chosen, list):
        return None
    tops = result.get("topCandidates")
    tops = tops if isinstance(tops, list) else []
    content = []
    for step, token in enumerate(chosen):
        if not isinstance(token, dict):
            continue
        top = tops[step].get("candidates") if step < len(tops) and isinstance(tops[step], dict) else None
        content.append({**_token_logprob(token),
                        "top_logprobs": [_token_logprob(t) for t in top or () if isinstance(t, dict)]})
    return {"content": content, "refusal": None}


def _token_logprob(token: dict[str, Any]) -> dict[str, Any]:
    text = token.get("token") if isinstance(token.get("token"), str) else ""
    value = token.get("logProbability")  # left out of the JSON when it is 0
    return {"token": text, "logprob": float(value) if isinstance(value, (int, float)) else 0.0,
            "bytes": list(text.encode())}


def parse_response(data: Any, fallback_model: str, secret: str | None = None) -> Completion:
    """A whole GenerateContentResponse as a Completion whose ``raw`` is an OpenAI chat.completion,
    one choice per candidate; ``text`` is the first one's."""
    candidates = candidates_of(data, secret)
    if not candidates:
        raise ProviderError(ErrorKind.MALFORMED, "not a Gemini response (no candidates, no promptFeedback)")
    choices, text = [], ""
    for position, candidate in enumerate(candidates):
        answer, calls = candidate_parts(candidate)
        message: dict[str, Any] = {"role": "assistant", "content": answer if answer or not calls else None,
                                   "refusal": None}
        if calls:
            message["tool_calls"] = calls
        finish = finish_reason(candidate.get("finishReason"), bool(calls)) or "stop"
        choices.append({"index": choice_index(candidate, position), "message": message,
                        "logprobs": openai_logprobs(candidate.get("logprobsResult")), "finish_reason": finish})
        text = text if position else answer
    model = str(data.get("modelVersion") or fallback_model)
    usage = parse_usage(data.get("usageMetadata"))
    raw = {
        "id": str(data.get("responseId") or "gemini"), "object": "chat.completion", "created": int(time.time()),
        "model": model, "choices": choices, "usage": openai_usage(usage),
    }
    return Completion(text=text, model=model, usage=usage, raw=raw)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


class StreamState:
    """Turns one stream's responses into OpenAI chunks, one per candidate that has something.
    Gemini sends no end marker: the stream is complete once every candidate seen has a
    ``finishReason``. Usage comes with every response, growing; the last one seen becomes the
    usage chunk (``usage_chunk``)."""

    def __init__(self, model: str, secret: str | None = None) -> None:
        self.secret = secret
        self.id = "gemini"
        self.model = model
        self.created = int(time.time())
        self.started: set[int] = set()  # choices whose role delta was sent
        self.calls: dict[int, int] = {}  # choice -> tool calls sent, for their indexes
        self.seen: set[int] = set()
        self.ended: set[int] = set()
        self.usage: Usage | None = None

    @property
    def finished(self) -> bool:
        return bool(self.ended) and self.seen <= self.ended

    def feed(self, data: Any) -> list[StreamChunk]:
        """The chunks for one response (none if it holds nothing); raises for an error event."""
        if isinstance(data, dict) and data.get("error"):
            error = data["error"]
            detail = error.get("message") or error.get("status") if isinstance(error, dict) else error
            message = safe_message(f"the upstream sent an error event: {detail}", self.secret)
            code = error.get("status") if isinstance(error, dict) else None
            raise ProviderError(ErrorKind.ERROR_EVENT, message, code=str(code) if code else None)
        candidates = candidates_of(data, self.secret)
        self.id = str(data.get("responseId") or self.id)
        self.model = str(data.get("modelVersion") or self.model)
        if isinstance(data.get("usageMetadata"), dict):
            self.usage = parse_usage(data["usageMetadata"])
        chunks = []
        for position, candidate in enumerate(candidates):
            chunk = self._chunk(choice_index(candidate, position), candidate)
            if chunk is not None:
                chunks.append(chunk)
        return chunks

    def _chunk(self, index: int, candidate: dict[str, Any]) -> StreamChunk | None:
        self.seen.add(index)
        calls_before = self.calls.get(index, 0)
        text, calls = candidate_parts(candidate, calls_before)
        delta: dict[str, Any] = {}
        if index not in self.started:
            delta["role"] = "assistant"
            self.started.add(index)
        if text:
            delta["content"] = text
        if calls:
            delta["tool_calls"] = [{"index": calls_before + i, **call} for i, call in enumerate(calls)]
            self.calls[index] = calls_before + len(calls)
        finish = finish_reason(candidate.get("finishReason"), self.calls.get(index, 0) > 0)
        if finish is not None:
            self.ended.add(index)
        logprobs = openai_logprobs(candidate.get("logprobsResult"))
        if not delta and finish is None and logprobs is None:
            return None
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return StreamChunk(raw={**self._base(), "choices": [choice]}, text=text, has_content=bool(text or calls),
                           model=self.model, finish_reason=finish)

    def usage_chunk(self) -> StreamChunk | None:
        """The usage chunk (``choices: []``) for the end of the stream, if usage was reported."""
        if self.usage is None:
            return None
        raw = {**self._base(), "choices": [], "usage": openai_usage(self.usage)}
        return StreamChunk(raw=raw, usage=self.usage, model=self.model)

    def _base(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
