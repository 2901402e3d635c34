"""POST /admin/reload: re-read providers.yaml without a restart (``modelbroker reload``)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from modelbroker._config.messages import ConfigError
from modelbroker._routing.errors import APIError
from modelbroker._server.responses import JSONResponse, error_responses

router = APIRouter(prefix="/admin")


@router.post("/reload", responses=error_responses(400, 401))
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
