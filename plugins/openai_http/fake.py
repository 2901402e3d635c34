"""OpenAI chat completions (``POST .../chat/completions``) as the fake upstream speaks it."""

from __future__ import annotations

import time
from typing import Any

import orjson

from modelbroker.fake_upstream.formats import FakeRequest, Rejected, Reply, Script, sse, text_of

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


def error_body(message: str, status: int, code: str | None = None) -> bytes:
    """OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``."""
    err_type = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    if code == "insufficient_quota":
        err_type = "insufficient_quota"
    return orjson.dumps({"error": {"message": message, "type": err_type, "param": None, "code": code}})


class OpenAICall:
    """One chat-completions request; ``number`` makes the answer's id unique."""

    def __init__(self, payload: Any, number: int) -> None:
        if not isinstance(payload, dict) or not payload.get("model"):
            msg = "request body must be a JSON object with a model" if isinstance(payload, dict) \
                else "could not parse the JSON body of your request"
            raise Rejected(400, error_body(msg, 400, "invalid_request"))
        self.payload = payload
        self.model = str(payload["model"])
        self.stream = bool(payload.get("stream"))
        self.id = f"chatcmpl-fake-{number}"
        self.created = int(time.time())

    def reply(self, reply: str | None, chunks: int) -> Reply:
        messages = self.payload.get("messages")
        messages = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
        users = [m for m in messages if m.get("role") == "user"]
        last = text_of(users[-1].get("content")) if users else ""
        prompts = [text_of(m.get("content")) for m in messages]
        return Reply.build(self.model, prompts, last, self._tool_name(), reply, chunks)

    def _tool_name(self) -> str | None:
        tools = self.payload.get("tools")
        if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
            return None
        return (tools[0].get("function") or {}).get("name", "tool")

    @staticmethod
    def _tool_call(reply: Reply) -> dict:
        return {"id": "call_fake_1", "type": "function",
                "function": {"name": reply.tool, "arguments": "{}"}}

    @staticmethod
    def _usage(reply: Reply) -> dict:
        return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.total_tokens}

    def _body(self, reply: Reply, choices: bool) -> bytes:
        if reply.tool is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [self._tool_call(reply)]}
        else:
            message = {"role": "assistant", "content": reply.text}
        finish = "tool_calls" if reply.tool is not None else "stop"
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        return orjson.dumps({
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.payload["model"], "choices": [choice] if choices else [],
            "usage": self._usage(reply)})

    def completion(self, reply: Reply) -> bytes:
        return self._body(reply, choices=True)

    def empty(self, reply: Reply) -> bytes:
        return self._body(reply, choices=False)

    def malformed(self) -> bytes:
        return b'{"choices": [tru'

    def error(self, status: int, code: str | None) -> bytes:
        return error_body(f"fake upstream error {status}", status, code)

    def script(self, reply: Reply) -> Script:
        base = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.payload["model"]}

        def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
            return sse({**base, "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]})

        if reply.tool is not None:
            deltas = [chunk({"tool_calls": [{"index": 0, **self._tool_call(reply)}]})]
        else:
            deltas = [chunk({"content": piece}) for piece in reply.pieces]
        closing = [chunk({}, "tool_calls" if reply.tool is not None else "stop")]
        options = self.payload.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            closing.append(sse({**base, "choices": [], "usage": self._usage(reply)}))
        closing.append(sse(b"[DONE]"))
        return Script([chunk({"role": "assistant", "content": ""})], deltas, closing)

    def error_event(self) -> bytes:
        return sse({"error": {"message": "fake mid-stream error", "type": "server_error"}})


class OpenAIFormat:
    """``type: openai`` for the fake upstream: any path ending in ``/chat/completions``."""

    def endpoint(self, base_url: str) -> str:
        return base_url + "/v1/chat/completions"

    def call(self, request: FakeRequest) -> OpenAICall | None:
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            return None
        return OpenAICall(request.payload, request.number)
