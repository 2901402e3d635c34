"""POST /admin/reload: re-read providers.yaml without a restart (``modelbroker reload``).

Every route here needs an admin key; while the gateway has no key, only a request
from this machine is answered (``require_admin``, ``local_when_open``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from modelbroker._config.messages import ConfigError
from modelbroker._routing.errors import APIError
from modelbroker._server.access import require_admin
from modelbroker._server.responses import JSONResponse, error_responses


def _admin_only(request: Request) -> None:
    require_admin(request, local_when_open=True)


router = APIRouter(prefix="/admin", dependencies=[Depends(_admin_only)])


@router.post("/reload", responses=error_responses(400, 401, 403, 413, 503))
async def reload_config(request: Request) -> JSONResponse:
    """Apply a changed providers.yaml; an invalid file is refused and the old one stays."""
    gateway = request.app.state.gateway
    try:
        config = await gateway.reload()
    except ConfigError as exc:
        raise APIError(400, f"reload refused, the running configuration is unchanged: {exc}",
                       code="invalid_config") from None
    return JSONResponse({"reloaded": config.source, "providers": len(config.providers),
                         "strategy": config.strategy})
