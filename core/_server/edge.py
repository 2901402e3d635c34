"""The gateway's one ASGI middleware, in front of FastAPI, for every request:

1. who may call (``core/_server/access.py``, the ``authenticate`` hook): 401 and the like;
2. bodies no route should parse (``core/_server/body_rules.py``): 413, 415; and the
   memory bodies in flight take together, charged here until the request is answered: 503;
3. an unexpected exception becomes a 500 in the error shape, and the client's
   keep-alive connection survives. (A FastAPI handler for ``Exception`` runs in
   Starlette's outermost middleware, which re-raises after answering: uvicorn then
   drops the connection and logs the error twice.)
4. once the answer to a request a surface parsed is sent (a stream's too: the app returns
   after its last event), ``on_request_end`` hears its status, if a plugin implements it.

One layer rather than three: each ASGI layer costs a few microseconds on every request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelbroker._routing.errors import APIError
from modelbroker._server.access import principal_of
from modelbroker._server.body_rules import BodyRules
from modelbroker._server.errors import handle
from modelbroker._server.request_ids import request_id
from modelbroker._server.responses import error_response
from modelbroker._server.scope import header, state
from modelbroker._server.surfaces import error_body_of


class Edge:
    """``error_shapes`` maps a path to the surface whose ``error`` renders errors there;
    ``known_path(scope)`` says whether a route answers it (a body refused on a path no
    route answers is a 404, not a 415). With ``stamp_request_id``, every response gets an
    ``x-request-id`` if its route gave none (the surfaces give their own). ``body_rules`` is
    shared by every Edge of a gateway, so that one budget counts all bodies in flight."""

    def __init__(self, app: ASGIApp, gateway, body_rules: BodyRules,
                 on_refusal: Callable[[str, str, APIError], None], error_shapes: dict[str, Any] | None = None,
                 known_path: Callable[[Scope], bool] | None = None, stamp_request_id: bool = False) -> None:
        self.app = app
        self.gateway = gateway
        self.body_rules = body_rules
        self.on_refusal = on_refusal
        self.error_shapes = error_shapes if error_shapes is not None else {}
        self.known_path = known_path
        self.stamp_request_id = stamp_request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            charged = await self._admit(scope)
        except APIError as refusal:
            if refusal.status == 415 and self.known_path is not None and not self.known_path(scope):
                refusal = APIError(404, f"no route answers {scope['method']} {scope['path']}", code="not_found")
            await self._refuse(scope, receive, send, refusal)
            return
        counted = None
        if charged is None:
            receive = counted = self.body_rules.counting(receive)
        started = False
        status = 499  # unless an answer starts: the client left, or the server is stopping
        stamp = self.stamp_request_id

        async def tracked(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                if stamp:
                    _stamp(scope, message)
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise  # the answer is under way: nothing sound can be sent now
            response = await handle(Request(scope, receive), exc)
            status = response.status_code
            await response(scope, receive, send)
        finally:
            self.body_rules.release(charged if counted is None else counted.charged)
            hooks = getattr(self.gateway, "hooks", None)
            if hooks is not None and hooks.has("on_request_end"):
                _ended(hooks, scope, status)

    async def _admit(self, scope: Scope) -> int | None:
        """Raise the APIError that refuses this request, if any; else what its body was charged
        (``BodyRules.check``), None if its body must be counted as it arrives."""
        hooks = getattr(self.gateway, "hooks", None)
        if hooks is not None and hooks.has("authenticate"):
            pending = principal_of(hooks, scope, self.gateway.config)
            principal = await pending if pending is not None else None
            if principal is not None:
                state(scope)["principal"] = principal
        return self.body_rules.check(scope)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, refusal: APIError) -> None:
        rid = request_id(header(scope, b"x-request-id"))
        state(scope)["request_id"] = rid
        refusal.headers = {**(refusal.headers or {}), "x-request-id": rid}
        self.on_refusal(scope["path"], rid, refusal)
        shape = self.error_shapes.get(scope["path"])
        body = error_body_of(shape, refusal) if shape is not None else None
        await error_response(refusal, body)(scope, receive, send)


def _ended(hooks, scope: Scope, status: int) -> None:
    """Tell ``on_request_end`` that a request a surface parsed (``on_request``) has its answer."""
    chat = scope.get("state", {}).get("chat")
    if chat is not None:
        hooks.notify("on_request_end", request=chat, status=status)


def _stamp(scope: Scope, message: Message) -> None:
    """Add ``x-request-id`` to a response's head unless it has one (the request's own id,
    made here if no route made it)."""
    headers = message.setdefault("headers", [])
    for name, _ in headers:
        if name == b"x-request-id":
            return
    kept = state(scope)
    rid = kept.get("request_id")
    if rid is None:
        rid = kept["request_id"] = request_id(header(scope, b"x-request-id"))
    if isinstance(headers, list):
        headers.append((b"x-request-id", rid.encode("latin-1")))
    else:
        message["headers"] = [*headers, (b"x-request-id", rid.encode("latin-1"))]
