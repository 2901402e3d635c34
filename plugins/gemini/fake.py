"""Google Gemini (``POST /v1beta/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``) as the fake upstream speaks it.

The model is in the URL; the key in ``x-goog-api-key`` or ``?key=``. As with
the real API, a request without a key gets 403 ``PERMISSION_DENIED`` and errors
have Google's shape ``{"error": {"code", "message", "status"}}``. A stream is
one ``data:`` event per ``GenerateContentResponse``, CRLF-separated like the
real one, with no end marker: the last chunk carries ``finishReason`` and the
complete ``usageMetadata``. ``empty_choices`` answers a blocked prompt
(no candidates, ``promptFeedback.blockReason``). Only ``alt=sse`` streams.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from modelbroker.fake_upstream.formats import FakeRequest, Rejected, Reply, Script, sse

STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
                504: "DEADLINE_EXCEEDED"}
NO_KEY = ("Method doesn't allow unregistered callers (callers without established identity). "
          "Please use API key or other form of API consumer identity to call this API.")


def error_body(status: int, message: str, status_name: str | None = None) -> bytes:
    name = status_name or STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    return orjson.dumps({"error": {"code": status, "message": message, "status": name}})


def _texts(content: Any) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return ""
    return " ".join(str(p["text"]) for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


class GeminiCall:
    """One generateContent (``stream`` false) or streamGenerateContent request for ``model``."""

    def __init__(self, payload: Any, headers: Mapping[str, str], query: Mapping[str, list[str]],
                 model: str, stream: bool, number: int) -> None:
        if not headers.get("x-goog-api-key") and not query.get("key"):
            raise Rejected(403, error_body(403, NO_KEY), model)
        if not isinstance(payload, dict) or not isinstance(payload.get("contents"), list):
            raise Rejected(400, error_body(400, "* GenerateContentRequest.contents: contents is not specified"), model)
        if stream and query.get("alt") != ["sse"]:
            raise Rejected(400, error_body(400, "this fake streams only with ?alt=sse"), model)
        self.payload = payload
        self.model = model
        self.stream = stream
        self.id = f"fake-{number}"

    def reply(self, reply: str | None, chunks: int) -> Reply:
        contents = [c for c in self.payload["contents"] if isinstance(c, dict)]
        prompts = [_texts(c) for c in contents]
        if self.payload.get("systemInstruction"):
            prompts.insert(0, _texts(self.payload["systemInstruction"]))
        users = [c for c in contents if c.get("role", "user") == "user" and _texts(c)]
        last = _texts(users[-1]) if users else ""
        return Reply.build(self.model, prompts, last, self._tool_name(), reply, chunks)

    def _tool_name(self) -> str | None:
        tools = self.payload.get("tools")
        if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
            return None
        declarations = tools[0].get("functionDeclarations")
        if not isinstance(declarations, list) or not declarations or not isinstance(declarations[0], dict):
            return None
        return str(declarations[0].get("name", "tool"))

    def _response(self, parts: list[dict] | None, finish: str | None, usage: dict) -> dict:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return {"candidates": [candidate], "usageMetadata": usage,
                "modelVersion": self.model, "responseId": self.id}

    @staticmethod
    def _usage(reply: Reply) -> dict:
        return {"promptTokenCount": reply.prompt_tokens, "candidatesTokenCount": reply.completion_tokens,
                "totalTokenCount": reply.total_tokens}

    @staticmethod
    def _parts(reply: Reply) -> list[dict]:
        if reply.tool is not None:
            return [{"functionCall": {"name": reply.tool, "args": {}}}]
        return [{"text": reply.text}]

    def completion(self, reply: Reply) -> bytes:
        return orjson.dumps(self._response(self._parts(reply), "STOP", self._usage(reply)))

    def empty(self, reply: Reply) -> bytes:
        usage = {"promptTokenCount": reply.prompt_tokens, "totalTokenCount": reply.prompt_tokens}
        return orjson.dumps({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage,
                             "modelVersion": self.model, "responseId": self.id})

    def malformed(self) -> bytes:
        return b'{"candidates": [tru'

    def error(self, status: int, code: str | None) -> bytes:
        return error_body(status, f"fake upstream error {status}", code)

    def script(self, reply: Reply) -> Script:
        so_far = {"promptTokenCount": reply.prompt_tokens, "totalTokenCount": reply.prompt_tokens}
        if reply.tool is not None:
            deltas = [_event(self._response(self._parts(reply), None, so_far))]
        else:
            deltas = [_event(self._response([{"text": piece}], None, so_far)) for piece in reply.pieces]
        closing = [_event(self._response([{"text": ""}], "STOP", self._usage(reply)))]
        return Script([], deltas, closing)

    def error_event(self) -> bytes:
        return _event({"error": {"code": 500, "message": "fake mid-stream error", "status": "INTERNAL"}})


def _event(obj: dict) -> bytes:
    return sse(obj, end=b"\r\n\r\n")


#: Gemini's ``{version}/models/{model}:{method}`` paths.
_PATH = re.compile(r"/[^/]+/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)")


class GeminiFormat:
    """``type: gemini`` for the fake upstream: ``POST /{version}/models/{model}:generateContent``
    and ``:streamGenerateContent``; the provider's endpoint is the models base."""

    def endpoint(self, base_url: str) -> str:
        return base_url + "/v1beta/models"

    def call(self, request: FakeRequest) -> GeminiCall | None:
        match = _PATH.fullmatch(request.path) if request.method == "POST" else None
        if match is None:
            return None
        stream = match["method"] == "streamGenerateContent"
        return GeminiCall(request.payload, request.headers, request.query, match["model"], stream, request.number)
