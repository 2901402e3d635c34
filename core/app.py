"""The FastAPI application: routes, error handlers and the gateway's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pluggy
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from core import __version__
from core.config import ConfigError
from core.disconnect import ClientGone
from core.gateway import Gateway, UnknownModel
from core.guard import RequestGuard
from core.responses import APIError, error_response
from core.router import AllProvidersBusy, AllProvidersFailed, NoProviderAvailable, UnknownStrategy
from core.routes import admin, generate, health, openai_chat
from core.settings import Settings
from core.validation import problems

log = logging.getLogger("modelbroker")


def create_app(settings: Settings | None = None, pm: pluggy.PluginManager | None = None) -> FastAPI:
    """Build the app; raises ConfigError (with a clear message) for a bad providers.yaml."""
    gateway = Gateway.from_settings(settings, pm)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        reload_on_sighup(gateway)
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(title="modelbroker", version=__version__, lifespan=lifespan)
    app.state.gateway = gateway
    for routes in (generate, openai_chat, health, admin):
        app.include_router(routes.router)
    _add_error_handlers(app)
    app.add_middleware(RequestGuard, max_body_bytes=gateway.settings.max_body_bytes)
    return app


def reload_on_sighup(gateway: Gateway) -> None:
    """``kill -HUP <pid>`` re-reads providers.yaml (where the platform has SIGHUP and this is
    the main thread; a gateway run in a thread, as in tests, uses POST /admin/reload)."""
    loop = asyncio.get_running_loop()

    def reload() -> None:
        async def run() -> None:
            try:
                await gateway.reload()
            except ConfigError as exc:
                log.error("reload refused, the running configuration is unchanged: %s", exc)

        loop.create_task(run())

    with contextlib.suppress(AttributeError, ValueError, RuntimeError, NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, reload)


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
        message = f"the request deadline passed after {len(attempts)} attempts: {summary}"
        return APIError(504, message, code="deadline_exceeded", headers=headers, attempts=attempts)
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after)))
        message = f"every provider is rate-limiting: {summary}"
        return APIError(429, message, code="rate_limited", headers=headers, attempts=attempts)
    message = f"all {len(attempts)} provider attempts failed: {summary}"
    return APIError(502, message, code="all_providers_failed", headers=headers, attempts=attempts)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(NoProviderAvailable)
    async def no_provider(_: Request, exc: NoProviderAvailable):
        return error_response(APIError(503, f"no provider can take this request: {exc}", code="no_provider"))

    @app.exception_handler(UnknownStrategy)
    async def unknown_strategy(request: Request, exc: UnknownStrategy):
        installed = ", ".join(request.app.state.gateway.strategies)
        message = f"unknown strategy {exc.args[0]!r}; installed strategies: {installed}"
        return error_response(APIError(400, message, code="unknown_strategy", param="strategy"))

    @app.exception_handler(UnknownModel)
    async def unknown_model(_: Request, exc: UnknownModel):
        message = f"model {exc.model!r} does not exist here; available: {', '.join(exc.available)}"
        return error_response(APIError(404, message, code="model_not_found", param="model"))

    @app.exception_handler(AllProvidersFailed)
    async def all_failed(_: Request, exc: AllProvidersFailed):
        return error_response(all_failed_error(exc))

    @app.exception_handler(ClientGone)
    async def client_gone(_: Request, exc: ClientGone):
        return Response(status_code=499)  # nobody is listening; the status is for access logs

    @app.exception_handler(AllProvidersBusy)
    async def all_busy(_: Request, exc: AllProvidersBusy):
        headers = {"retry-after": "1"}
        return error_response(APIError(429, f"no provider can take this request now: {exc}",
                                       code="providers_busy", headers=headers))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError):
        found = problems(list(exc.errors()))
        message = "; ".join(f"{field}: {text}" for field, text in found)
        return error_response(APIError(422, message, param=found[0][0] if found else None))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException):
        return error_response(APIError(exc.status_code, str(exc.detail), headers=exc.headers))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(APIError(500, "internal error in the gateway; the gateway log has the details"))
