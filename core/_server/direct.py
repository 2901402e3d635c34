"""The two generation routes, served without FastAPI's routing and dependency layers.

``POST /generate`` and ``POST /v1/chat/completions`` carry all the traffic; for
them FastAPI's middleware stack, route matching (a scan of every route, plugins'
included) and dependency solving were a large share of the gateway's CPU per
request (measured with ``python -m bench.profile --py-spy``; docs/performance.md,
'Measurements behind the code'). ``GatewayApp`` hands these two straight to
``core/_server/edge.py`` and then to the endpoint function. Their
FastAPI declarations stay, so /openapi.json still describes them; any other
method or path goes through FastAPI as before.

A middleware added to the FastAPI app with ``add_middleware`` does not see these
two routes; plugins act on requests through hooks (``authenticate``, ``admit``,
``on_result``...), which run for every route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


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
    """FastAPI, with the generation routes (POST only) answered by ``direct`` first, and a
    startup failure the lifespan explained (``startup_error``) reported as that one line."""

    direct: ASGIApp | None = None
    direct_paths: frozenset[str] = frozenset()
    startup_error: str | None = None
    #: The exception that stopped startup, for a test gateway to raise (modelbroker.testing).
    startup_failure: BaseException | None = None

    def serve_directly(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.direct, self.direct_paths = app, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
