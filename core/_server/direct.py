"""The surfaces' routes (``POST /v1/chat/completions``, ``/v1/messages``, ...), served without
FastAPI's routing and dependency layers.

They carry all the traffic; for them FastAPI's middleware stack, route matching (a
scan of every route, plugins' included) and dependency solving were a large share of
the gateway's CPU per request (measured with ``python -m bench.profile --py-spy``;
docs/performance.md, 'Measurements behind the code'). ``GatewayApp`` hands them
straight to ``core/_server/edge.py`` and then to the surface's endpoint. Their FastAPI
declarations stay, so /openapi.json still describes them; any other method or path
goes through FastAPI as before.

A middleware added to the FastAPI app with ``add_middleware`` does not see these
routes; plugins act on requests through hooks (``authenticate``, ``admit``,
``on_result``...), which run for every route. CORS, which must apply to them, is
applied in front of both (``allow_origins``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]

#: Response headers a browser page may read when CORS is on.
EXPOSED_HEADERS = ["x-request-id", "x-modelbroker-provider", "x-modelbroker-attempts", "x-modelbroker-cost",
                   "x-modelbroker-overhead-ms", "retry-after", "x-should-retry"]


class DirectRoutes:
    """An ASGI app calling ``routes[path]`` with a Starlette Request and sending its Response.

    Exceptions propagate to the caller (``modelbroker._server.edge.Edge``), which answers them in
    the error shape, as FastAPI's exception handlers do for the other routes.
    """

    def __init__(self, routes: dict[str, Endpoint]) -> None:
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.routes[scope["path"]](Request(scope, receive))
        await response(scope, receive, send)


class GatewayApp(FastAPI):
    """FastAPI, with the surfaces' POST paths answered by ``direct`` first, a path's trailing
    slash ignored, CORS when configured, and a startup failure the lifespan explained
    (``startup_error``) reported as that one line."""

    direct: ASGIApp | None = None
    direct_paths: frozenset[str] = frozenset()
    startup_error: str | None = None
    #: The exception that stopped startup, for a test gateway to raise (modelbroker.testing).
    startup_failure: BaseException | None = None
    cors: ASGIApp | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Each surface path -> its surface (``BuiltSurface``); path -> the object whose ``error``
        #: renders errors there (surfaces' paths and their ``error_paths``).
        self.surface_at: dict[str, Any] = {}
        self.error_shapes: dict[str, Any] = {}
        self.router.redirect_slashes = False  # a trailing slash is ignored instead (see __call__)

    def serve_directly(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.direct, self.direct_paths = app, paths

    def allow_origins(self, origins: list[str]) -> None:
        """Answer CORS preflights and add CORS headers on every route, the direct ones included
        (``MODELBROKER_CORS_ORIGINS``; docs/configuration.md explains the trade-off)."""
        self.cors = CORSMiddleware(self._dispatch, allow_origins=origins, allow_methods=["*"], allow_headers=["*"],
                                   expose_headers=EXPOSED_HEADERS, max_age=600)

    def has_route(self, scope: Scope) -> bool:
        """Whether some route answers this path and method (read only on an error path)."""
        for route in self.router.routes:
            if route.matches(scope)[0] == Match.FULL:
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path[-1:] == "/" and len(path) > 1:  # /v1/chat/completions/ is /v1/chat/completions, as in vLLM
                scope["path"] = path.rstrip("/") or "/"
            if self.cors is not None:
                await self.cors(scope, receive, send)
                return
        await self._dispatch(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.direct_paths:
            scope["app"] = self
            await self.direct(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            send = self._explained(send)
        await super().__call__(scope, receive, send)

    def _explained(self, send: Send) -> Send:
        """Starlette reports a failed startup to the server with the whole traceback, which
        uvicorn prints as the only message; one the gateway explained goes as its explanation."""
        async def explained(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and self.startup_error is not None:
                message = {**message, "message": self.startup_error}
            await send(message)

        return explained
