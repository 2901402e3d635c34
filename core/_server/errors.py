"""Every error a client can meet, as one response shape; refusals reported to plugins.

Each known exception becomes an ``APIError`` (status, message, code). A
request to a generation route that is refused before any attempt is reported
through ``on_rejected``, so a ledger accounts for every request that arrived.
Every error response carries the request's ``x-request-id``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from modelbroker._config.messages import problems
from modelbroker._plugins.hookcall import PluginError
from modelbroker._routing.errors import (
    AllProvidersBusy,
    AllProvidersFailed,
    APIError,
    AttemptSummary,
    NoProviderAvailable,
    UnknownModel,
    UnknownStrategy,
)
from modelbroker._server.disconnect import ClientGone
from modelbroker._server.request_ids import request_id_of
from modelbroker._server.responses import error_response
from modelbroker._server.scope import state
from modelbroker._server.surfaces import error_body_of

log = logging.getLogger("modelbroker")

def all_failed_error(exc: AllProvidersFailed) -> APIError:
    """502 (504 past the deadline, 429 if every attempt was rate-limited), listing each attempt.

    ``x-should-retry: false`` tells the client SDKs that the gateway has already
    done the retrying, so they do not multiply it.
    """
    attempts = [a.public() for a in exc.attempts]
    if exc.attempts and not exc.deadline and all(a.request_fault for a in exc.attempts):
        return request_fault_error(exc.attempts[-1], attempts)
    summary = "; ".join(
        f"{a['provider']}: {a.get('error')}{' ' + str(a['status']) if 'status' in a else ''}" for a in attempts
    )
    headers = {"x-should-retry": "false"}
    if exc.deadline:
        message = (f"the request deadline passed after {len(attempts)} attempts: {summary}" if attempts
                   else "the request deadline passed before any provider was tried")
        return APIError(504, message, code="deadline_exceeded", headers=headers, attempts=attempts)
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after)))
        message = f"every provider is rate-limiting: {summary}"
        return APIError(429, message, code="rate_limited", headers=headers, attempts=attempts)
    message = f"all {len(attempts)} provider attempts failed: {summary}"
    return APIError(502, message, code="all_providers_failed", headers=headers, attempts=attempts)


def request_fault_error(last: AttemptSummary, attempts: list[dict]) -> APIError:
    """Every provider tried refused the request itself: the client is told what the last one
    said (its status, message, type, code and param), as it would be told calling it directly."""
    status = last.status if last.status in (400, 413, 422) else 400
    return APIError(status, last.detail or last.message or "the request was refused as invalid",
                    code=last.code, param=last.param, type=last.error_type or "invalid_request_error",
                    headers={"x-should-retry": "false"}, attempts=attempts)


def as_api_error(request: Request, exc: Exception) -> APIError:
    """The APIError for a known exception; 500 for anything else (logged)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, NoProviderAvailable):
        return APIError(503, f"no provider can take this request: {exc}", code="no_provider")
    if isinstance(exc, UnknownStrategy):
        installed = ", ".join(request.app.state.gateway.strategies)
        message = f"unknown strategy {exc.args[0]!r}; installed strategies: {installed}"
        return APIError(400, message, code="unknown_strategy", param="strategy")
    if isinstance(exc, UnknownModel):
        message = f"model {exc.model!r} does not exist here; available: {', '.join(exc.available)}"
        return APIError(404, message, code="model_not_found", param="model")
    if isinstance(exc, AllProvidersFailed):
        return all_failed_error(exc)
    if isinstance(exc, AllProvidersBusy):
        return APIError(429, f"no provider can take this request now: {exc}", code="providers_busy",
                        headers={"retry-after": "1"})
    if isinstance(exc, RequestValidationError):
        found = problems(list(exc.errors()))
        message = "; ".join(f"{field}: {text}" for field, text in found)
        return APIError(422, message, param=found[0][0] if found else None)
    if isinstance(exc, HTTPException):
        return APIError(exc.status_code, str(exc.detail), headers=exc.headers)
    if isinstance(exc, PluginError):
        log.error("%s (on %s %s)", exc, request.method, request.url.path, exc_info=exc.error)
        return APIError(500, f"{exc}; the gateway log has the traceback", code="plugin_error")
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return APIError(500, "internal error in the gateway; the gateway log has the details")


async def handle(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ClientGone):
        return Response(status_code=499)  # nobody is listening; the status is for access logs
    error = as_api_error(request, exc)
    rid = request_id_of(request)
    error.headers = {**(error.headers or {}), "x-request-id": rid}
    app = request.app
    path = request.scope["path"]
    chat = state(request.scope).get("chat")
    # Attempts were told to on_result/on_failure; a request refused before any is told here.
    tried = isinstance(exc, AllProvidersFailed) and exc.attempts
    surface = getattr(app, "surface_at", {}).get(path)
    if surface is not None and not tried:
        gateway = app.state.gateway
        if gateway.router is not None:
            gateway.router.report.rejected(chat, rid, path, error.status,
                                           error.message, surface.name)
    if chat is not None and chat.skipped and error.status >= 429:
        error.details.setdefault("skipped", chat.skipped)  # left out for what they cannot carry, not tried
    shape = getattr(app, "error_shapes", {}).get(path)
    return error_response(error, error_body_of(shape, error) if shape is not None else None)


def install_error_handlers(app: FastAPI) -> None:
    """Known exceptions are answered by Starlette's exception middleware; anything else by
    ``modelbroker._server.edge.Edge`` (a handler for ``Exception`` itself would make Starlette re-raise)."""
    for kind in (APIError, NoProviderAvailable, UnknownStrategy, UnknownModel, AllProvidersFailed,
                 AllProvidersBusy, ClientGone, RequestValidationError, HTTPException, PluginError):
        app.add_exception_handler(kind, handle)
