"""The objects that travel through the hooks: a request, a completion, a provider error.

They are plain dataclasses rather than pydantic models: they are built once per
request on the hot path, and validation happens at the edges (the HTTP routes and
providers.yaml), not here.
"""

from __future__ import annotations

import enum
import random
import time
from dataclasses import dataclass, field
from typing import Any


def unique_id() -> str:
    """32 hex digits: the time in milliseconds (48 bits), then 80 random bits.

    Unique across requests, processes and replicas (an id, not a secret; no system call).
    Later ids sort later, so a database index on them grows at its end, as one on a time
    does. Wholly random ids land all over the index: in a large SQLite ledger, a row with
    two such indexes (request id and uid) cost several times the CPU it cost with ids in
    time order, and the gap widens as the table grows (docs/performance.md, 'Measurements
    behind the code').
    """
    return f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


@dataclass(slots=True)
class ChatRequest:
    """One client request, as the router and every plugin see it.

    ``messages`` are OpenAI chat messages. ``extra`` holds any other request
    fields the client sent, which OpenAI-style adapters pass through untouched.
    ``model`` is what the client asked for (a provider id, a model name or a
    strategy name); ``strategy`` overrides the configured strategy.
    ``received_at`` is ``time.perf_counter()`` when the gateway got the request;
    ``deadline`` the ``time.monotonic()`` by which it must be answered (0: the
    configured ``reliability.request_timeout_s`` from when routing starts).
    ``client`` names who is calling (the client key's name, else the OpenAI
    ``user`` field, else None), for accounting; ``route`` the path it came in on.
    ``uid`` is the gateway's own id for the request: unlike ``request_id``, which is
    the client's ``x-request-id`` when it sent one, it is never shared by two requests.

    ``surface`` names the API the request came in through (``chat``, ``messages``,
    ``responses``, ``embeddings``, ``generate``, or a plugin's); ``kind`` is ``chat`` or
    ``embeddings``, and a request is routed only among providers of its kind. An
    embeddings request has no messages: its ``input`` is in ``extra["input"]``.
    ``native`` is the request as its surface received it, when that format is one an
    adapter may speak natively (the Anthropic Messages API): such an adapter sends it
    without a round trip through the chat format, and answers with ``Completion.native``
    and ``StreamChunk.native``. Every other adapter reads ``messages`` and ``extra``.
    """

    messages: list[dict[str, Any]]
    request_id: str = ""
    model: str | None = None
    strategy: str | None = None
    received_at: float = 0.0
    deadline: float = 0.0
    client: str | None = None
    route: str | None = None
    principal: Principal | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    uid: str = field(default_factory=unique_id)
    surface: str | None = None
    kind: str = "chat"
    native: Native | None = None
    #: Providers left out because they cannot carry a feature the request needs
    #: (provider id -> the features), set by the gateway when it chooses the candidates.
    skipped: dict[str, list[str]] | None = None
    #: The most this request may cost: providers whose worst case costs more are left out
    #: (``x-modelbroker-max-cost``, a surface's field, a key's default; ``_routing/ceiling.py``).
    max_cost: float | None = None
    #: Headers a plugin adds to the answer (``admit`` or ``lookup`` may set them), sent
    #: with the routing headers on a whole answer and a stream alike.
    response_headers: dict[str, str] | None = None

    def prompt_text(self) -> str:
        """The text of all messages joined (an embeddings request: its input), for token
        estimates and logs."""
        if self.kind == EMBEDDINGS:
            return _input_text(self.extra.get("input"))
        parts: list[str] = []
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        return "\n".join(parts)


#: The two kinds of request (``ChatRequest.kind``) and of provider (``kind:`` in providers.yaml).
CHAT, EMBEDDINGS = "chat", "embeddings"


def _input_text(value: Any) -> str:
    """An embeddings ``input`` as text: strings joined; a token array as four characters a
    token, which ``estimate_tokens`` counts as one each (the surface checked the shape, so
    the first item tells a token array)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        if isinstance(value[0], int):
            return "0000" * len(value)
        return "\n".join(_input_text(item) for item in value)
    return ""


@dataclass(slots=True)
class Native:
    """A request or an answer in a wire format other than OpenAI chat, kept whole.

    ``format`` names it (``"anthropic.messages"``); ``body`` is the JSON object.
    ``required``, on a request, says why only an adapter that speaks ``format`` can carry
    it (``"tools[0] is Anthropic's server tool web_search_20250305"``): the router then
    skips providers whose adapter does not list ``format`` in its ``features``. None when
    the chat form (``messages``, ``extra``) carries the request as well.
    """

    format: str
    body: dict[str, Any]
    required: str | None = None


@dataclass(slots=True)
class Principal:
    """Who is calling, as an ``authenticate`` plugin established it.

    ``name`` is what the ledger records as the client; ``data`` is the
    plugin's own (limits, allowed models) for its ``admit`` check. ``role`` is
    ``client`` or ``admin``: only an admin may call /admin/*, /dashboard and read
    every client's /usage (``modelbroker.require_admin``).
    """

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    role: str = "client"


@dataclass(slots=True)
class Usage:
    """Token counts for one attempt, as the upstream reported them.

    ``cached_tokens`` and ``reasoning_tokens`` are kept apart when the upstream
    reports them; ``estimated`` is true when the counts were not reported but
    computed by the gateway.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    estimated: bool = False


@dataclass(slots=True)
class RateLimit:
    """What an upstream's ``x-ratelimit-*`` headers said about its remaining quota."""

    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None


@dataclass(slots=True)
class Completion:
    """A successful answer from one provider.

    ``model`` is the model the upstream says it used. ``raw`` is the answer as
    an OpenAI ``chat.completion`` dict (adapters for other wire formats
    convert), which /v1/chat/completions relays; None if the adapter has none.
    ``upstream_ms`` is the time the adapter spent waiting on the upstream.
    ``cost`` and ``overhead_ms`` (the gateway's own time for the request so
    far, all upstream waits taken out) are filled in by the router.
    """

    text: str
    model: str
    usage: Usage
    raw: dict[str, Any] | None = None
    upstream_ms: float = 0.0
    cost: float = 0.0
    overhead_ms: float = 0.0
    rate_limit: RateLimit | None = None
    #: The upstream's answer in the request's native format, when the adapter spoke it.
    native: Native | None = None


@dataclass(slots=True)
class StreamChunk:
    """One piece of a streamed answer.

    ``raw`` is the piece as an OpenAI ``chat.completion.chunk`` dict (adapters
    for other wire formats convert). ``text`` is its content delta.
    ``has_content`` is true when the chunk carries content or a tool call: once
    such a chunk reaches the client, the request can no longer fall back.
    ``usage`` is set on the chunk that reports the stream's token usage. ``native``
    is the upstream's event in the request's native format (``ChatRequest.native``),
    when the adapter spoke it; ``raw`` may then be empty.
    """

    raw: dict[str, Any]
    text: str = ""
    has_content: bool = False
    usage: Usage | None = None
    model: str | None = None
    finish_reason: str | None = None
    native: dict[str, Any] | None = None


class ErrorKind(str, enum.Enum):
    """Why an attempt failed. The values appear in app.log and error responses."""

    TIMEOUT = "timeout"
    PARTIAL = "partial"
    CONNECT = "connect"
    CONNECTION = "connection"
    STATUS = "status"
    MALFORMED = "malformed"
    ERROR_EVENT = "error_event"
    PLUGIN = "plugin_error"
    CANCELLED = "cancelled"


class ProviderError(Exception):
    """One failed attempt at one provider.

    Adapters raise it for every failure of the upstream call. ``message`` must
    never contain a secret: adapters build it from the upstream's answer with
    the API key removed.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        usage: Usage | None = None,
        code: str | None = None,
        rate_limit: RateLimit | None = None,
        detail: str | None = None,
        error_type: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        #: Tokens spent before the failure (a stream cut after some content), else None.
        self.usage = usage
        #: Cost of ``usage``, filled in by the core.
        self.cost = 0.0
        #: The upstream's error code, e.g. ``insufficient_quota``, ``context_length_exceeded``.
        self.code = code
        self.rate_limit = rate_limit
        #: The upstream's own error message, type and parameter (secrets masked), as the
        #: client is told them when the request itself was at fault (docs/reliability.md).
        self.detail = detail
        self.error_type = error_type
        self.param = param

    @property
    def quota_exhausted(self) -> bool:
        """The account is out of credit (read from ``code``; see docs/hooks.md, "Error codes")."""
        from modelbroker._routing.policy import quota_exhausted

        return quota_exhausted(self)

    @property
    def context_too_long(self) -> bool:
        """The prompt does not fit the model's context window (read from ``code``)."""
        from modelbroker._routing.policy import context_too_long

        return context_too_long(self)

    def __str__(self) -> str:
        status = f" {self.status}" if self.status is not None else ""
        return f"{self.kind.value}{status}: {self.message}"
