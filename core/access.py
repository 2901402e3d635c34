"""Who may call: the ``authenticate`` hook, asked for every route but ``/health``.

Asked from ``core/edge.py`` once per request, with no Request object built.
With no plugin answering (no client key configured), the gateway is open. The
principal found is kept in ``scope["state"]["principal"]``, where routes read
it as ``request.state.principal``.
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.types import Scope

from core.responses import APIError
from core.types import Principal

OPEN_PATHS = frozenset({"/health"})
log = logging.getLogger("modelbroker")


async def principal_of(hooks, scope: Scope, headers: Headers) -> Principal | None:
    """The caller as ``authenticate`` says; raises APIError to refuse. A check that fails
    inside a plugin refuses too: a broken check never lets a request through."""
    if scope["path"] in OPEN_PATHS:
        return None
    try:
        _, pending = hooks.first("authenticate", headers=headers, path=scope["path"])
        return await pending if pending is not None else None
    except APIError:
        raise
    except Exception as exc:  # noqa: BLE001
        log.error("authentication failed inside a plugin; the request is refused: %s", exc)
        raise APIError(500, "the gateway could not check the credentials; the gateway log has the details",
                       code="authentication_unavailable") from None
