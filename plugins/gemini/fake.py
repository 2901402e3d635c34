"""Google Gemini (``POST /v1beta/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``) as the fake upstream speaks it.

The model is in the URL; the key in ``x-goog-api-key`` or ``?key=``. As with
the real API, a request without a key gets 403 ``PERMISSION_DENIED`` and errors
have Google's shape ``{"error": {"code", "message", "status"}}``. A stream is
one ``data:`` event per ``GenerateContentResponse``, CRLF-separated like the
real one, with no end marker: the last chunk carries ``finishReason`` and the
complete ``usageMetadata``. ``empty_choices`` answers a blocked prompt
(no candidates, ``promptFeedback.blockReason``). Only ``alt=sse`` streams.
``generationConfig`` is honoured where it shapes the answer: ``candidateCount`` candidates,
``responseLogprobs`` (a token is a word of the reply), and ``responseMimeType:
application/json`` answers ``{"reply": "<the usual reply>"}``.

``:embedContent`` and ``:batchEmbedContents`` (at most 100 requests, each naming the model
of the URL, as the real API insists) answer deterministic vectors: each from a hash of its
text, unit length, ``outputDimensionality`` long (768 by default); tokens are not reported.
The stream kinds send such a body in pieces, cut, stalled or spoilt after ``cut_after``.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from functools import lru_cache
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
        config = payload.get("generationConfig")
        self.config = config if isinstance(config, dict) else {}
        count = self.config.get("candidateCount", 1)
        if type(count) is not int or not 1 <= count <= 8:
            raise Rejected(400, error_body(400, "candidateCount must be between 1 and 8"), model)
        self.payload = payload
        self.model = model
        self.stream = stream
        self.candidates = count
        self.id = f"fake-{number}"

    def reply(self, reply: str | None, chunks: int) -> Reply:
        contents = [c for c in self.payload["contents"] if isinstance(c, dict)]
        prompts = [_texts(c) for c in contents]
        if self.payload.get("systemInstruction"):
            prompts.insert(0, _texts(self.payload["systemInstruction"]))
        users = [c for c in contents if c.get("role", "user") == "user" and _texts(c)]
        last = _texts(users[-1]) if users else ""
        answer = Reply.build(self.model, prompts, last, self._tool_name(), reply, chunks)
        if answer.tool is None and reply is None and self.config.get("responseMimeType") == "application/json":
            answer = Reply.build(self.model, prompts, last, None, orjson.dumps({"reply": answer.text}).decode(), chunks)
        answer.completion_tokens *= self.candidates
        return answer

    def _tool_name(self) -> str | None:
        tools = self.payload.get("tools")
        if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
            return None
        declarations = tools[0].get("functionDeclarations")
        if not isinstance(declarations, list) or not declarations or not isinstance(declarations[0], dict):
            return None
        return str(declarations[0].get("name", "tool"))

    def _response(self, parts: list[dict] | None, finish: str | None, usage: dict) -> dict:
        candidates = []
        for index in range(self.candidates):
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": index}
            if finish:
                candidate["finishReason"] = finish
            if self.config.get("responseLogprobs"):
                candidate["logprobsResult"] = self._logprobs(parts or [])
            candidates.append(candidate)
        return {"candidates": candidates, "usageMetadata": usage,
                "modelVersion": self.model, "responseId": self.id}

    def _logprobs(self, parts: list[dict]) -> dict:
        """A word of the text is a token, chosen with log probability -0.1 times its position;
        ``logprobs`` alternatives, each less likely."""
        words = " ".join(str(p.get("text", "")) for p in parts).split()
        top = self.config.get("logprobs") if type(self.config.get("logprobs")) is int else 0
        chosen = [{"token": word, "tokenId": i, "logProbability": -0.1 * i} for i, word in enumerate(words)]
        result: dict[str, Any] = {"chosenCandidates": chosen}
        if top:
            result["topCandidates"] = [{"candidates": [
                {"token": f"{c['token']}~{k}" if k else c["token"], "tokenId": c["tokenId"] + k,
                 "logProbability": c["logProbability"] - k} for k in range(top)]} for c in chosen]
        return result

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


DEFAULT_DIMENSIONS = 768
MAX_BATCH = 100


@lru_cache(maxsize=4096)
def fake_vector(text: str, dimensions: int) -> tuple[float, ...]:
    """A unit vector from a hash of ``text``; its first values do not depend on ``dimensions``."""
    values = [byte - 127.5 for byte in hashlib.shake_256(text.encode()).digest(dimensions)]
    norm = math.sqrt(sum(value * value for value in values))
    return tuple(value / norm for value in values)


def _embed_text(request: Any, where: str, model: str) -> str:
    """The text of one ``EmbedContentRequest``; raises Rejected as Gemini would."""
    content = request.get("content") if isinstance(request, dict) else None
    text = _texts(content)
    if not text:
        raise Rejected(400, error_body(400, f"* {where}.content: contents is not specified"), model)
    dimensions = request.get("outputDimensionality")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        raise Rejected(400, error_body(400, f"* {where}.output_dimensionality: must be positive"), model)
    return text


class GeminiEmbedCall:
    """One ``embedContent`` (``batch`` false) or ``batchEmbedContents`` request; never a stream."""

    stream = False

    def __init__(self, payload: Any, headers: Mapping[str, str], query: Mapping[str, list[str]],
                 model: str, batch: bool) -> None:
        if not headers.get("x-goog-api-key") and not query.get("key"):
            raise Rejected(403, error_body(403, NO_KEY), model)
        self.model = model
        self.batch = batch
        self.pieces = 1
        payload = payload if isinstance(payload, dict) else {}
        if not batch:
            self.requests = [payload]
            _embed_text(payload, "EmbedContentRequest", model)
            return
        requests = payload.get("requests")
        if not isinstance(requests, list) or not requests:
            raise Rejected(400, error_body(400, "* BatchEmbedContentsRequest.requests: requests is not specified"),
                           model)
        if len(requests) > MAX_BATCH:
            message = f"* BatchEmbedContentsRequest.requests: at most {MAX_BATCH} requests can be in one batch"
            raise Rejected(400, error_body(400, message), model)
        for i, request in enumerate(requests):
            where = f"BatchEmbedContentsRequest.requests[{i}]"
            _embed_text(request, where, model)
            if request.get("model") != f"models/{model}":
                raise Rejected(400, error_body(400, f"* {where}.model: the model of each request must be the "
                                                    f"model of the URL, models/{model}"), model)
        self.requests = requests

    def reply(self, reply: str | None, chunks: int) -> Reply:
        self.pieces = max(1, chunks)
        return Reply("", [], None, sum(max(1, len(_texts(r["content"]).split())) for r in self.requests), 0)

    def _embedding(self, request: dict) -> dict:
        dimensions = request.get("outputDimensionality") or DEFAULT_DIMENSIONS
        return {"values": list(fake_vector(_texts(request["content"]), dimensions))}

    def completion(self, reply: Reply) -> bytes:
        if self.batch:
            return orjson.dumps({"embeddings": [self._embedding(r) for r in self.requests]})
        return orjson.dumps({"embedding": self._embedding(self.requests[0])})

    def empty(self, reply: Reply) -> bytes:
        return b'{"embeddings": []}' if self.batch else b"{}"

    def malformed(self) -> bytes:
        return b'{"embedding": {"values": [tru'

    def error(self, status: int, code: str | None) -> bytes:
        return error_body(status, f"fake upstream error {status}", code)

    def script(self, reply: Reply) -> Script:
        body, pieces = self.completion(reply), self.pieces
        return Script([], [body[i * len(body) // pieces:(i + 1) * len(body) // pieces] for i in range(pieces)], [])

    def error_event(self) -> bytes:
        return b"\n" + error_body(500, "fake mid-body error")


#: Gemini's ``{version}/models/{model}:{method}`` paths.
_PATH = re.compile(r"/[^/]+/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent"
                   r"|embedContent|batchEmbedContents)")


class GeminiFormat:
    """``type: gemini`` for the fake upstream: ``POST /{version}/models/{model}:generateContent``,
    ``:streamGenerateContent``, ``:embedContent`` and ``:batchEmbedContents``; the provider's
    endpoint is the models base, for both kinds of provider."""

    def endpoint(self, base_url: str) -> str:
        return base_url + "/v1beta/models"

    def call(self, request: FakeRequest) -> GeminiCall | GeminiEmbedCall | None:
        match = _PATH.fullmatch(request.path) if request.method == "POST" else None
        if match is None:
            return None
        method = match["method"]
        if method in ("embedContent", "batchEmbedContents"):
            return GeminiEmbedCall(request.payload, request.headers, request.query, match["model"],
                                   method == "batchEmbedContents")
        stream = method == "streamGenerateContent"
        return GeminiCall(request.payload, request.headers, request.query, match["model"], stream, request.number)
