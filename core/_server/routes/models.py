"""GET /v1/models and GET /v1/models/{id}: every value ``model`` may take, in OpenAI's format.

Both kinds of provider are listed (chat and embeddings), then ``auto`` and the strategies.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from modelbroker._routing.errors import APIError
from modelbroker._server.responses import JSONResponse, error_responses

router = APIRouter()


def model_list(gateway) -> list[dict[str, Any]]:
    owners: dict[str, str] = {}
    for provider in gateway.config.providers:
        owners.setdefault(provider.id, provider.name)
        owners.setdefault(provider.model, provider.name)
    return [
        {"id": name, "object": "model", "created": 0, "owned_by": owners.get(name, "modelbroker")}
        for name in gateway.model_names()
    ]


@router.get("/v1/models", responses=error_responses(401))
async def list_models(request: Request) -> JSONResponse:
    """Every value ``model`` may take, in OpenAI's list format."""
    return JSONResponse({"object": "list", "data": model_list(request.app.state.gateway)})


@router.get("/v1/models/{model_id:path}", responses=error_responses(401, 404))
async def retrieve_model(model_id: str, request: Request) -> JSONResponse:
    """One model, as ``client.models.retrieve(id)`` reads it; 404 if ``model`` cannot take the value."""
    for model in model_list(request.app.state.gateway):
        if model["id"] == model_id:
            return JSONResponse(model)
    raise APIError(404, f"model {model_id!r} does not exist here; GET /v1/models lists those that do",
                   code="model_not_found", param="model")


router.add_api_route("/models", list_models, methods=["GET"], include_in_schema=False)
router.add_api_route("/models/{model_id:path}", retrieve_model, methods=["GET"], include_in_schema=False)
