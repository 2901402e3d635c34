"""GET /health: is the gateway up, and what providers does it have (never a secret)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from modelbroker._server.responses import JSONResponse

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    gateway = request.app.state.gateway
    providers = [
        {
            "id": p.id,
            "name": p.name,
            "model": p.model,
            "type": p.type,
            "enabled": p.enabled,
            **({"disabled_reason": p.disabled_reason} if p.disabled_reason else {}),
            **(gateway.health.report(p) if p.enabled else {}),
        }
        for p in gateway.config.providers
    ]
    usable = any(p.enabled for p in gateway.config.providers)
    body = {"status": "ok" if usable else "no_provider", "strategy": gateway.config.strategy, "providers": providers}
    if gateway.state is not None:
        body["shared_state"] = gateway.state.status()
    return JSONResponse(body)
