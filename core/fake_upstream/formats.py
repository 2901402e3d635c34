"""How the fake upstream speaks a wire format: what an adapter plugin gives it.

The fake upstream itself knows no provider. An adapter plugin that wants its wire format
spoken (the built-in ``openai``, ``anthropic`` and ``gemini`` do) registers a ``FakeFormat``
through the ``register_fake_formats`` hook, under its provider type. For each request the
fake asks each format's ``call``; the format that recognises the request (by method and
path) gives a ``Call``, which knows how the format spells every answer: a whole completion,
an empty one, a malformed body, an error body, the SSE events of a stream, a mid-stream
error event. The behaviour kinds in ``modelbroker.fake_upstream`` decide *what* to send and
*when* (delays, cuts, stalls, resets) and ask the call for the bytes, so every kind works
the same way in every format.

The fake assistant's answer itself (``Reply``) is the same in all formats: a
tool call when the request offers tools, else ``"Fake reply from {model}:
{last user text}"``; a prompt token is a word of a message (at least one per
message), a completion token a word of the reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson


class Rejected(Exception):
    """The request is refused before any behaviour applies (no key, bad body); ``model`` is
    recorded with it when the request named one."""

    def __init__(self, status: int, body: bytes, model: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.model = model


@dataclass
class FakeRequest:
    """One request to the fake upstream, as a format reads it: ``path`` without its query,
    ``query`` parsed (name -> values), header names in lower case, ``payload`` the body's
    JSON (None if it is not JSON), ``number`` unique for the request (for answer ids)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    payload: Any
    number: int


@dataclass
class Reply:
    """What the fake assistant says, in no particular format."""

    text: str
    pieces: list[str]
    tool: str | None
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def build(cls, model: str, prompts: list[str], last_user: str, tool: str | None,
              reply: str | None, chunks: int) -> Reply:
        """``prompts``: the text of each message; ``reply``: the behaviour's fixed reply, if any."""
        prompt = sum(max(1, len(text.split())) for text in prompts)
        if tool is not None and reply is None:
            return cls("", [], tool, prompt, 1)
        text = reply if reply is not None else f"Fake reply from {model}: {last_user[:200]}"
        return cls(text, split(text, chunks), None, prompt, len(text.split()))


@dataclass
class Script:
    """A stream's SSE events: those before the deltas, the deltas (``cut_after`` counts
    these), and those that end it."""

    opening: list[bytes]
    deltas: list[bytes]
    closing: list[bytes]


class FakeFormat(Protocol):
    """A wire format, as an adapter plugin registers it for the fake upstream."""

    def endpoint(self, base_url: str) -> str:
        """The ``endpoint`` a provider of this type has on a fake upstream at ``base_url``."""

    def call(self, request: FakeRequest) -> Call | None:
        """The request in this format, or None if it is not one (another path); raise
        ``Rejected`` for a request of this format that the real API would refuse."""


#: What the ``register_fake_formats`` hook hands each plugin: ``register(type, fake_format)``.
RegisterFakeFormat = Callable[[str, FakeFormat], None]


class Call(Protocol):
    """One request in one wire format; see the module docstring."""

    model: str
    stream: bool

    def reply(self, reply: str | None, chunks: int) -> Reply: ...
    def completion(self, reply: Reply) -> bytes: ...
    def empty(self, reply: Reply) -> bytes: ...
    def malformed(self) -> bytes: ...
    def error(self, status: int, code: str | None) -> bytes: ...
    def script(self, reply: Reply) -> Script: ...
    def error_event(self) -> bytes: ...


def text_of(content: Any) -> str:
    """Text of a message content: a string or a list of ``{"type": "text"}`` parts or blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content
                        if isinstance(p, dict) and p.get("type") == "text")
    return ""


def split(text: str, n: int) -> list[str]:
    """Split text into exactly max(1, n) consecutive pieces."""
    n = max(1, n)
    return [text[i * len(text) // n:(i + 1) * len(text) // n] for i in range(n)]


def sse(obj: Any, event: str | None = None, end: bytes = b"\n\n") -> bytes:
    """One SSE event (not yet framed as an HTTP chunk); ``obj`` is JSON-encoded unless bytes."""
    head = b"event: %s\n" % event.encode() if event else b""
    return head + b"data: " + (obj if isinstance(obj, bytes) else orjson.dumps(obj)) + end
