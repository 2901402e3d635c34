"""GET /health: is the gateway up, and what providers does it have (never a secret).

Two probes for an orchestrator or a load balancer sit beside it, open like it:

- ``/health/live``: 200 whenever the process answers; it asks nothing else, so a
  restart is never caused by Redis or the database being away.
- ``/health/ready``: 200 when this replica may take traffic, 503 naming the check that
  failed otherwise. The checks: ``config`` (providers.yaml is loaded), ``started``
  (every plugin's ``on_startup`` has finished: the ledger has migrated its schema, or
  its writer waits for the database with records queued and spilled) and ``state``
  (the shared-state store answers ``status()``: Redis reachable, or its documented
  in-process fallback during an outage), plus one per plugin that answers the
  ``readiness`` hook (the keys plugin: its key table has been read).
  docs/deployment.md, "Health probes".
"""

from __future__ import annotations

from collections.abc import Mapping

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


@router.get("/health/live")
async def live() -> JSONResponse:
    """The process serves HTTP; nothing else is asked."""
    return JSONResponse({"status": "ok"})


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Every check, each with ``ok``; 503 and ``failing`` when one is not."""
    gateway = request.app.state.gateway
    checks = {"config": _config(gateway), "started": _started(gateway), "state": _state(gateway),
              **_plugins(gateway)}
    failing = [name for name, check in checks.items() if not check["ok"]]
    if failing:
        return JSONResponse({"status": "not_ready", "failing": failing, "checks": checks}, status_code=503)
    return JSONResponse({"status": "ready", "checks": checks})


def _config(gateway) -> dict:
    """Always ok: a gateway is not built without a valid providers.yaml, and a reload keeps it."""
    providers = gateway.config.providers
    return {"ok": True, "providers": len(providers), "enabled": sum(p.enabled for p in providers)}


def _started(gateway) -> dict:
    if gateway.router is None:
        return {"ok": False, "error": "the gateway has not finished starting (plugins' on_startup)"}
    return {"ok": True}


def _state(gateway) -> dict:
    """Ready whether the store shares state or has fallen back to this process during an
    outage (it says which in ``shared``); not ready only if there is no store or it cannot
    say (a store's ``status()`` must not raise: modelbroker.SharedState)."""
    if gateway.state is None:
        return {"ok": False, "error": "the shared-state store is not open yet"}
    try:
        status = dict(gateway.state.status())
    except Exception as exc:  # noqa: BLE001 - a broken store makes this replica unready, not the probe fail
        return {"ok": False, "error": f"the shared-state store's status() failed: {type(exc).__name__}: {exc}"[:300]}
    return {"ok": True, **status}


def _plugins(gateway) -> dict[str, dict]:
    """Each plugin's own answer to the ``readiness`` hook, as a check named after it."""
    hooks = getattr(gateway, "hooks", None)
    if gateway.router is None or hooks is None or not hooks.has("readiness"):
        return {}
    checks = {}
    for plugin, answer in hooks.each_outcome("readiness"):
        if isinstance(answer, Exception):
            checks[plugin] = {"ok": False, "error": f"its readiness hook failed: {type(answer).__name__}"}
        elif isinstance(answer, Mapping) and isinstance(answer.get("ok"), bool):
            checks[plugin] = dict(answer)
        else:
            checks[plugin] = {"ok": False, "error": "its readiness hook did not answer a mapping with a bool 'ok'"}
    return checks
