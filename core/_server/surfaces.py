"""Surfaces: the APIs clients speak, each over the one router.

A surface (OpenAI chat completions, the Responses API, Anthropic's Messages API,
embeddings, /generate, or a plugin's own) reads its request format into a
``ChatRequest`` and renders the router's answer, stream and errors in its format.
Everything between is the core's and the same for every surface: the request id,
the caller, the deadline, ``admit``, the choice of providers, fallback, the
disconnect watch, the routing headers, ``on_rejected`` for a refusal. A plugin
registers a surface by name (``register_surfaces``), as the built-in ones are.

The surfaces' POST paths are answered without FastAPI's routing and dependency
layers (``direct.py``); their FastAPI declarations exist for /openapi.json only.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from modelbroker._routing.ceiling import max_cost_of
from modelbroker._routing.errors import APIError
from modelbroker._routing.stored import look_up, served
from modelbroker._routing.types import ChatRequest, Principal
from modelbroker._server.disconnect import unless_disconnected
from modelbroker._server.request_ids import request_id_of
from modelbroker._server.responses import JSONResponse, openai_error_body
from modelbroker._server.scope import header, read_body, state
from modelbroker._server.sse import EventStreamResponse

if TYPE_CHECKING:
    from modelbroker._routing.router import Routed
    from modelbroker._routing.view import GatewayView


class Surface(Protocol):
    """What a surface's factory returns (``register_surfaces``).

    ``paths``: the POST paths it answers (``("/v1/messages",)``); a path may be given with
    and without ``/v1``. Optional attributes: ``error_paths``, further paths whose errors
    take this surface's shape (a plugin's own route beside it); ``openapi``, the
    ``openapi_extra`` of its paths in /openapi.json (``{"requestBody": ...}``); ``summary``.

    ``parse`` reads the body into a ``ChatRequest`` (raise ``APIError`` 400 naming the
    field for a bad one); the core fills in the request id, the caller, the deadline,
    ``route`` and ``surface``. ``answer`` gives the body of a whole answer: a dict (sent
    as JSON), bytes (JSON already) or a Starlette ``Response``. ``stream`` gives the
    bytes of a streamed answer (server-sent events), read from ``routed.relay()``.
    ``error`` gives the body of an error response in the surface's shape
    (``error.status`` is the status). ``parse`` and ``answer`` may return awaitables;
    all run on the event loop for every request.
    """

    paths: Sequence[str]

    def parse(self, body: bytes, incoming: Incoming) -> ChatRequest | Awaitable[ChatRequest]: ...

    def answer(self, request: ChatRequest, routed: Routed) -> Any: ...

    def stream(self, request: ChatRequest, routed: Routed) -> AsyncIterator[bytes]: ...

    def error(self, error: APIError) -> dict[str, Any]: ...


@dataclass(slots=True)
class Incoming:
    """One request as a surface's ``parse`` sees it, besides its body."""

    scope: Scope
    #: The id the answer carries in ``x-request-id``.
    request_id: str
    #: Who is calling (``authenticate``), or None.
    principal: Principal | None
    #: The gateway: its config in force, settings, strategies, plugins.
    gateway: GatewayView

    @property
    def path(self) -> str:
        return self.scope["path"]

    @property
    def headers(self) -> Headers:
        """All the request's headers (case-insensitive)."""
        return Headers(scope=self.scope)

    def header(self, name: str) -> str | None:
        """One header's first value, or None (``name`` in lower case)."""
        return header(self.scope, name.encode("latin-1"))


class SurfaceRoute:
    """The endpoint for one surface's paths: parse, admit, route, answer."""

    def __init__(self, name: str, surface: Surface) -> None:
        self.name = name
        self.surface = surface

    async def __call__(self, request: Request) -> Response:
        received_at = time.perf_counter()
        scope = request.scope
        gateway = scope["app"].state.gateway
        body = await read_body(request.receive)
        kept = state(scope)
        principal = kept.get("principal")
        incoming = Incoming(scope, request_id_of(request), principal, gateway)
        chat = self.surface.parse(body, incoming)
        del body  # parsed: a large body's bytes are freed while the request is routed
        if not isinstance(chat, ChatRequest):
            chat = await chat
        chat.request_id = incoming.request_id
        chat.received_at = received_at
        chat.route = scope["path"]
        chat.surface = self.name
        chat.deadline = gateway.deadline(header(scope, b"x-modelbroker-timeout"))
        chat.max_cost = max_cost_of(header(scope, b"x-modelbroker-max-cost"), chat.max_cost)
        if principal is not None:
            chat.principal = principal
            chat.client = principal.name
        kept["chat"] = chat  # on_request_end hears of it from here (core/_server/edge.py)
        if gateway.hooks.has("on_request"):
            gateway.hooks.notify("on_request", request=chat, headers=incoming.headers)
        await gateway.admit(chat)
        stored = None
        if gateway.hooks.has("lookup"):  # an answer kept by a plugin, given with no attempt
            stored = await look_up(gateway.hooks, chat, incoming.headers, gateway.config)
        if stored is not None:
            routed = served(gateway.router.report, chat, stored)
        else:
            routed = await unless_disconnected(request.receive, gateway.router.route(chat, gateway.candidates(chat)))
        headers = routing_headers(chat, routed)
        if routed.stream is not None:
            return EventStreamResponse(self.surface.stream(chat, routed), headers=headers)
        headers["x-modelbroker-cost"] = f"{routed.completion.cost:.8f}"
        answer = self.surface.answer(chat, routed)
        if not isinstance(answer, (dict, bytes, Response)):
            answer = await answer
        if isinstance(answer, bytes):
            return Response(answer, headers=headers, media_type="application/json")
        if isinstance(answer, Response):
            add_headers(answer, headers)
            return answer
        return JSONResponse(answer, headers=headers)


def add_headers(response: Response, headers: dict[str, str]) -> None:
    """``headers`` on a surface's own response, replacing any it set under the same names.

    Appended to the raw list when the name is new, as nearly always: Starlette's
    ``headers.update`` rescans the whole list for every header it sets."""
    raw = response.raw_headers
    taken = {name for name, _ in raw}
    for name, value in headers.items():
        key = name.lower().encode("latin-1")
        if key in taken:
            response.headers[name] = value
        else:
            raw.append((key, value.encode("latin-1")))


def routing_headers(chat: ChatRequest, routed: Routed) -> dict[str, str]:
    """Which provider answered and after how many attempts."""
    overhead = routed.completion.overhead_ms if routed.completion else routed.stream.overhead_ms
    headers = {
        "x-request-id": chat.request_id,
        "x-modelbroker-provider": routed.provider.id,
        "x-modelbroker-attempts": str(len(routed.attempts)),
        "x-modelbroker-overhead-ms": f"{overhead:.3f}",
    }
    if chat.response_headers:
        headers.update(chat.response_headers)
    if chat.skipped:
        headers["x-modelbroker-skipped"] = "; ".join(
            f"{provider} (lacks {', '.join(features)})" for provider, features in chat.skipped.items())
    return headers


def error_body_of(surface: Any, error: APIError) -> dict[str, Any]:
    """The body of ``error`` in ``surface``'s shape (OpenAI's if it has no ``error``)."""
    render = getattr(surface, "error", None)
    if render is None:
        return openai_error_body(error)
    return render(error)
