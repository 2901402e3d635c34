"""Who may call: the ``authenticate`` hook, asked for every route but ``/health`` and its
probes (``OPEN_PATHS``), and the admin check of the routes that need more than a client key.

``authenticate`` is asked from ``core/_server/edge.py`` once per request, with no
Request object built. With no plugin answering (no client key configured), the
gateway is open. The principal found is kept in ``scope["state"]["principal"]``,
where ``caller_of(request)`` reads it.

``require_admin`` is asked by the few routes that need an admin (/admin/*,
/dashboard, every client's /usage, /metrics): nothing is added to a model request.
With no principal the gateway is open, except that /admin/* then answers only a
request from this machine: a loopback peer, through no proxy and from no browser
page (docs/security.md, "With no key").
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable
from typing import Any

from starlette.datastructures import Headers
from starlette.types import Scope

from modelbroker._routing.errors import APIError
from modelbroker._routing.types import Principal

OPEN_PATHS = frozenset({"/health", "/health/live", "/health/ready"})
#: The role of a ``Principal`` that may call the admin routes; any other role is a client's.
ADMIN = "admin"
#: Headers that say a request came through a proxy, or from a browser page: never local.
NOT_LOCAL_HEADERS = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip", b"origin"})
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


def caller_of(request: Any) -> Principal | None:
    """Who is calling, as ``authenticate`` said; None when no plugin answered (the gateway is open)."""
    found = request.scope.get("state")
    return found.get("principal") if found else None


def require_admin(request: Any, *, local_when_open: bool = False) -> Principal | None:
    """The caller if it is an admin; raise APIError 403 for a client (or another role).

    With no principal (no key configured, or a route a plugin leaves open) the caller is
    let through, unless ``local_when_open``: then only a request from this machine is
    (``is_local``), as for /admin/*. Returns the principal, or None."""
    principal = caller_of(request)
    path = request.scope["path"]
    if principal is None:
        if local_when_open and not is_local(request.scope):
            raise APIError(403, f"{path} answers only requests from this machine while the gateway has no "
                                "client key (not through a proxy, nor from a browser page); to call it from "
                                "elsewhere, create an admin key: modelbroker keys create --name NAME --admin",
                           code="admin_local_only")
        return None
    if principal.role != ADMIN:
        raise APIError(403, f"{path} needs an admin key; {principal.name!r} is a {principal.role}, not an admin "
                            "(modelbroker keys create --name NAME --admin makes an admin key)",
                       code="admin_key_required")
    return principal


def is_local(scope: Any) -> bool:
    """Whether the request came from this machine: its peer is a loopback address (127.0.0.0/8,
    ::1, or IPv4's mapped into IPv6) and no header says it came through a proxy or from a
    browser page. A proxy's ``X-Forwarded-For`` never makes a request local."""
    client = scope.get("client")
    if not client:
        return False  # a Unix socket, or a server that does not say: not known to be local
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_loopback:
        return False
    return not any(name in NOT_LOCAL_HEADERS for name, _ in scope["headers"])
