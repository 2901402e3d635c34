"""OpenAI chat completions (``POST .../chat/completions``) and embeddings (``POST .../embeddings``)
as the fake upstream speaks them.

``fake_upstream.endpoint("openai")`` is the chat URL, ``{url}/v1/chat/completions``. An
embeddings provider's endpoint on the fake is ``{url}/v1/embeddings`` (any path ending in
``/embeddings``): give it as ``endpoint``. Its vectors are fake but deterministic: each comes
from a hash of its input (text, or token ids), unit length, ``dimensions`` long (1536 by
default), a shorter one the start of a longer one renormalised, as text-embedding-3's are;
``encoding_format: base64`` is honoured; a token is a word of the input (at least one per
input), or one id of a token array.
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
import time
from array import array
from functools import lru_cache
from typing import Any

import orjson

from modelbroker.fake_upstream.formats import FakeRequest, Rejected, Reply, Script, sse, text_of

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


def error_body(message: str, status: int, code: str | None = None, param: str | None = None) -> bytes:
    """OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``."""
    err_type = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    if code == "insufficient_quota":
        err_type = "insufficient_quota"
    return orjson.dumps({"error": {"message": message, "type": err_type, "param": param, "code": code}})


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


DEFAULT_DIMENSIONS = 1536
MAX_INPUTS = 2048


def _refuse(message: str, param: str) -> Rejected:
    return Rejected(400, error_body(message, 400, "invalid_request", param))


def _inputs(value: Any) -> list[str | list[int]]:
    """The inputs of an embeddings request, one per vector; raises Rejected as OpenAI would."""
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value:
        if all(type(item) is int and item >= 0 for item in value):
            return [value]  # one token array, of any length
        if len(value) <= MAX_INPUTS and all(isinstance(item, str) and item for item in value):
            return value
        if len(value) <= MAX_INPUTS and all(isinstance(item, list) and item and all(
                type(t) is int and t >= 0 for t in item) for item in value):
            return value
    raise _refuse("'$.input' is invalid: give a non-empty string, a list of them, a token array or a list of "
                  f"token arrays (at most {MAX_INPUTS} inputs)", "input")


@lru_cache(maxsize=4096)
def fake_vector(key: bytes, dimensions: int) -> array:
    """A unit vector from a hash of ``key``; its first values do not depend on ``dimensions``."""
    values = [byte - 127.5 for byte in hashlib.shake_256(key).digest(dimensions)]
    norm = math.sqrt(sum(value * value for value in values))
    return array("f", [value / norm for value in values])


def _base64(vector: array) -> str:
    """Little-endian float32, as OpenAI sends ``encoding_format: base64``."""
    if sys.byteorder != "little":
        vector = array("f", vector)
        vector.byteswap()
    return base64.b64encode(vector.tobytes()).decode("ascii")


class OpenAIEmbeddingsCall:
    """One embeddings request: never a stream. The stream kinds send the body in ``chunks``
    pieces, cut (``stream_cut``), stalled (``stream_stall``) or spoilt (``stream_error_event``)
    after ``cut_after`` of them."""

    stream = False

    def __init__(self, payload: Any) -> None:
        if not isinstance(payload, dict) or not payload.get("model"):
            msg = "request body must be a JSON object with a model" if isinstance(payload, dict) \
                else "could not parse the JSON body of your request"
            raise Rejected(400, error_body(msg, 400, "invalid_request"))
        self.model = str(payload["model"])
        self.inputs = _inputs(payload.get("input"))
        dimensions = payload.get("dimensions")
        if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
            raise _refuse("'$.dimensions' must be an integer >= 1", "dimensions")
        self.dimensions = dimensions or DEFAULT_DIMENSIONS
        encoding = payload.get("encoding_format")
        if encoding not in (None, "float", "base64"):
            raise _refuse("'$.encoding_format' must be 'float' or 'base64'", "encoding_format")
        self.base64 = encoding == "base64"
        self.pieces = 1

    def reply(self, reply: str | None, chunks: int) -> Reply:
        self.pieces = max(1, chunks)
        tokens = sum(len(item) if isinstance(item, list) else max(1, len(item.split())) for item in self.inputs)
        return Reply("", [], None, tokens, 0)

    def _vector(self, item: str | list[int]) -> list[float] | str:
        key = item.encode() if isinstance(item, str) else b"tokens:" + orjson.dumps(item)
        vector = fake_vector(key, self.dimensions)
        return _base64(vector) if self.base64 else vector.tolist()

    def _body(self, reply: Reply, inputs: list[str | list[int]]) -> bytes:
        data = [{"object": "embedding", "index": i, "embedding": self._vector(item)} for i, item in enumerate(inputs)]
        return orjson.dumps({"object": "list", "data": data, "model": self.model,
                             "usage": {"prompt_tokens": reply.prompt_tokens, "total_tokens": reply.prompt_tokens}})

    def completion(self, reply: Reply) -> bytes:
        return self._body(reply, self.inputs)

    def empty(self, reply: Reply) -> bytes:
        return self._body(reply, [])

    def malformed(self) -> bytes:
        return b'{"data": [tru'

    def error(self, status: int, code: str | None) -> bytes:
        return error_body(f"fake upstream error {status}", status, code)

    def script(self, reply: Reply) -> Script:
        body, pieces = self.completion(reply), self.pieces
        return Script([], [body[i * len(body) // pieces:(i + 1) * len(body) // pieces] for i in range(pieces)], [])

    def error_event(self) -> bytes:
        return b"\n" + error_body("fake mid-body error", 500)


class OpenAIFormat:
    """``type: openai`` for the fake upstream: any path ending in ``/chat/completions`` or
    ``/embeddings``; ``endpoint`` gives the chat URL."""

    def endpoint(self, base_url: str) -> str:
        return base_url + "/v1/chat/completions"

    def call(self, request: FakeRequest) -> OpenAICall | OpenAIEmbeddingsCall | None:
        if request.method != "POST":
            return None
        if request.path.endswith("/chat/completions"):
            return OpenAICall(request.payload, request.number)
        if request.path.endswith("/embeddings"):
            return OpenAIEmbeddingsCall(request.payload)
        return None
