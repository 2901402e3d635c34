"""Who may call: the ``authenticate`` hook, asked for every route but ``/health``.

Asked from ``core/_server/edge.py`` once per request, with no Request object built.
With no plugin answering (no client key configured), the gateway is open. The
principal found is kept in ``scope["state"]["principal"]``, where routes read
it as ``request.state.principal``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from starlette.datastructures import Headers
from starlette.types import Scope

from modelbroker._routing.errors import APIError
from modelbroker._routing.types import Principal

OPEN_PATHS = frozenset({"/health"})
log = logging.getLogger("modelbroker")


def principal_of(hooks, scope: Scope, config) -> Awaitable[Principal | None] | None:
    """The caller as ``authenticate`` says, to be awaited; None when no plugin answers
    (the request goes on as anyone's, with no await). Raises APIError to refuse, now or
    when awaited. A check that fails inside a plugin refuses too: a broken check never
    lets a request through."""
    if scope["path"] in OPEN_PATHS:
        return None
    try:
        _, pending = hooks.first("authenticate", headers=Headers(scope=scope), path=scope["path"], config=config)
    except APIError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _check_failed(exc) from None
    return None if pending is None else _settled(pending)


async def _settled(pending: Awaitable[Principal | None]) -> Principal | None:
    try:
        return await pending
    except APIError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _check_failed(exc) from None


def _check_failed(exc: Exception) -> APIError:
    log.error("authentication failed inside a plugin; the request is refused: %s", exc)
    return APIError(500, "the gateway could not check the credentials; the gateway log has the details",
                    code="authentication_unavailable")
