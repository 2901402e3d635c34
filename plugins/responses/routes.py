"""``GET`` and ``DELETE /v1/responses/{response_id}``: a stored response, retrieved or forgotten
(the openai SDKs' ``client.responses.retrieve`` and ``.delete``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from modelbroker import APIError, error_responses, gateway_of
from modelbroker.plugins.responses.store import STORE_NAME, ResponseStore, StoreUnavailable

router = APIRouter()
PATHS = ("/v1/responses/{response_id}", "/responses/{response_id}")


def store_of(request: Request) -> ResponseStore:
    store = gateway_of(request).pm.get_plugin(STORE_NAME)
    if store is None:
        raise APIError(503, "stored responses are not available: the gateway has not started its store",
                       code="store_unavailable")
    return store


def owner_of(request: Request) -> str | None:
    """The client key's name (a response made with a key is that key's alone)."""
    principal = getattr(request.state, "principal", None)
    return principal.name if principal is not None else None


def not_found(response_id: str) -> APIError:
    return APIError(404, f"response with id {response_id!r} not found: it is unknown, has expired, or was created "
                         "with store: false", type="invalid_request_error", code="response_not_found",
                    param="response_id")


def unavailable(exc: StoreUnavailable) -> APIError:
    return APIError(503, f"the stored responses cannot be read now ({exc}); try again", code="store_unavailable")


async def retrieve(request: Request, response_id: str) -> Response:
    """The stored response, as it was answered."""
    if request.query_params.get("stream") in ("true", "1"):
        raise APIError(400, "stream: a stored response is retrieved whole; streaming it again is not available "
                            "through the gateway", code="unsupported_parameter", param="stream")
    try:
        stored = await store_of(request).get(response_id, owner_of(request))
    except StoreUnavailable as exc:
        raise unavailable(exc) from None
    if stored is None:
        raise not_found(response_id)
    return Response(stored.response_json, media_type="application/json")


async def delete(request: Request, response_id: str) -> dict:
    """Forget a stored response: it can no longer be retrieved or continued."""
    try:
        deleted = await store_of(request).delete(response_id, owner_of(request))
    except StoreUnavailable as exc:
        raise unavailable(exc) from None
    if not deleted:
        raise not_found(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


for number, path in enumerate(PATHS):
    shown = number == 0  # the path without /v1 is an alias, as the surface's own
    router.add_api_route(path, retrieve, methods=["GET"], include_in_schema=shown, summary="Retrieve a stored response",
                         responses={200: {"description": "The `response` object, as it was answered."},
                                    **error_responses(400, 401, 404, 503)})
    router.add_api_route(path, delete, methods=["DELETE"], include_in_schema=shown, summary="Delete a stored response",
                         responses={200: {"description": "`{id, object: response, deleted: true}`"},
                                    **error_responses(401, 404, 503)})
