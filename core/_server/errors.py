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
    NoProviderAvailable,
    UnknownModel,
    UnknownStrategy,
)
from modelbroker._server.disconnect import ClientGone
from modelbroker._server.request_ids import request_id_of
from modelbroker._server.responses import error_response

log = logging.getLogger("modelbroker")

GENERATION_ROUTES = frozenset({"/generate", "/v1/chat/completions"})


def all_failed_error(exc: AllProvidersFailed) -> APIError:
    """502 (504 past the deadline, 429 if every attempt was rate-limited), listing each attempt.

    ``x-should-retry: false`` tells the client SDKs that the gateway has already
    done the retrying, so they do not multiply it.
    """
    attempts = [a.public() for a in exc.attempts]
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
    # Attempts were told to on_result/on_failure; a request refused before any is told here.
    tried = isinstance(exc, AllProvidersFailed) and exc.attempts
    if request.scope["path"] in GENERATION_ROUTES and not tried:
        gateway = request.app.state.gateway
        if gateway.router is not None:
            gateway.router.report.rejected(getattr(request.state, "chat", None), rid, request.scope["path"],
                                           error.status, error.message)
    return error_response(error)


def install_error_handlers(app: FastAPI) -> None:
    """Known exceptions are answered by Starlette's exception middleware; anything else by
    ``modelbroker._server.edge.Edge`` (a handler for ``Exception`` itself would make Starlette re-raise)."""
    for kind in (APIError, NoProviderAvailable, UnknownStrategy, UnknownModel, AllProvidersFailed,
                 AllProvidersBusy, ClientGone, RequestValidationError, HTTPException, PluginError):
        app.add_exception_handler(kind, handle)
