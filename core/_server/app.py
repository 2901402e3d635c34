"""The FastAPI application: routes, error handlers and the gateway's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import pluggy
from fastapi import FastAPI

from modelbroker import __version__
from modelbroker._config.messages import ConfigError
from modelbroker._config.settings import Settings
from modelbroker._plugins.hookcall import HookCalls, PluginError
from modelbroker._routing.errors import APIError
from modelbroker._routing.gateway import Gateway
from modelbroker._server.access_log import keep_query_strings_out, silence_uvicorn_access_log
from modelbroker._server.direct import DirectRoutes, GatewayApp
from modelbroker._server.edge import Edge
from modelbroker._server.errors import GENERATION_ROUTES, install_error_handlers
from modelbroker._server.heap import settle_after_startup
from modelbroker._server.routes import admin, generate, health, openai_chat

log = logging.getLogger("modelbroker")


def create_app(settings: Settings | None = None, pm: pluggy.PluginManager | None = None, *,
               plugins: Mapping[str, object] | None = None, load_installed: bool = True) -> FastAPI:
    """Build the app; raises ConfigError (with a clear message) for a bad providers.yaml.

    ``plugins`` and ``load_installed`` are ``Gateway.from_settings``'s (a test gateway's plugins).
    """
    gateway = Gateway.from_settings(settings, pm, plugins=plugins, load_installed=load_installed)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            await gateway.start()
        except PluginError as exc:  # names the plugin, the hook and what it said: enough for a user
            log.debug("startup failed", exc_info=True)
            app.startup_error = f"modelbroker: cannot start: {exc}"
            app.startup_failure = exc
            raise
        except Exception as exc:  # a bug: uvicorn prints the traceback; a test gateway raises it
            app.startup_failure = exc
            raise
        if not gateway.settings.access_log:
            silence_uvicorn_access_log()
        else:
            keep_query_strings_out()
        if gateway.settings.gc_tuning:
            settle_after_startup()
        reload_on_sighup(gateway)
        try:
            yield
        finally:
            await gateway.stop()

    app = GatewayApp(title="modelbroker", version=__version__, lifespan=lifespan)
    app.state.gateway = gateway
    for routes in (generate, openai_chat, health, admin):
        app.include_router(routes.router)
    for _, routers in HookCalls(gateway.pm).each("api_routes"):
        for plugin_router in routers:
            app.include_router(plugin_router)

    def refused(path: str, request_id: str, error: APIError) -> None:
        if path in GENERATION_ROUTES and gateway.router is not None:
            gateway.router.report.rejected(None, request_id, path, error.status, error.message)
    install_error_handlers(app)
    edge = {"gateway": gateway, "max_body_bytes": gateway.settings.max_body_bytes, "on_refusal": refused}
    app.add_middleware(Edge, **edge)
    direct = DirectRoutes({"/generate": generate.generate, "/v1/chat/completions": openai_chat.chat_completions})
    app.serve_directly(Edge(direct, **edge), frozenset(direct.routes))
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
