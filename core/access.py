"""Who may call: the ``authenticate`` hook, asked for every route but ``/health``.

A pure ASGI middleware: it builds no Request object and costs one hook call
per request. With no plugin answering (no client key configured), the gateway
is open. The principal found is kept in ``scope["state"]["principal"]``,
where routes read it as ``request.state.principal``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from core.request_ids import request_id
from core.responses import APIError, error_response

OPEN_PATHS = frozenset({"/health"})
log = logging.getLogger("modelbroker")


class AccessControl:
    def __init__(self, app: ASGIApp, gateway, on_refusal: Callable[[str, str, APIError], None]) -> None:
        self.app = app
        self.gateway = gateway
        self.on_refusal = on_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hooks = getattr(self.gateway, "hooks", None)
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or hooks is None:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            _, pending = hooks.first("authenticate", headers=headers, path=scope["path"])
            principal = await pending if pending is not None else None
        except Exception as exc:  # noqa: BLE001 - refuse, never let a broken check through
            refusal = exc if isinstance(exc, APIError) else _broken(exc)
            rid = request_id(headers.get("x-request-id"))
            refusal.headers = {**(refusal.headers or {}), "x-request-id": rid}
            self.on_refusal(scope["path"], rid, refusal)
            await error_response(refusal)(scope, receive, send)
            return
        if principal is not None:
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def _broken(exc: Exception) -> APIError:
    log.error("authentication failed inside a plugin; the request is refused: %s", exc)
    return APIError(500, "the gateway could not check the credentials; the gateway log has the details",
                    code="authentication_unavailable")
