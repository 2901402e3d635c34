"""The FastAPI application: routes, error handlers and the gateway's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import pluggy
from fastapi import FastAPI, Request

from modelbroker import __version__
from modelbroker._config.messages import ConfigError
from modelbroker._config.settings import Settings
from modelbroker._plugins.hookcall import HookCalls, PluginError
from modelbroker._routing.errors import APIError
from modelbroker._routing.gateway import Gateway
from modelbroker._server.access_log import keep_query_strings_out, silence_uvicorn_access_log
from modelbroker._server.body_rules import BodyRules
from modelbroker._server.config_watch import watching_config
from modelbroker._server.direct import DirectRoutes, GatewayApp
from modelbroker._server.edge import Edge
from modelbroker._server.errors import install_error_handlers
from modelbroker._server.heap import settle_after_startup
from modelbroker._server.openapi import serve_docs
from modelbroker._server.routes import admin, health, models
from modelbroker._server.surfaces import SurfaceRoute

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
            async with watching_config(gateway):  # MODELBROKER_WATCH_CONFIG, or a reloading dev server
                yield
        finally:
            await gateway.stop()

    app = GatewayApp(title="modelbroker", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.gateway = gateway
    for routes in (health, models, admin):
        app.include_router(routes.router)
    serve_docs(app)  # /docs and /redoc, with no CDN
    endpoints = mount_surfaces(app, gateway)
    for _, routers in HookCalls(gateway.pm).each("api_routes"):
        for plugin_router in routers:
            app.include_router(plugin_router)

    def refused(path: str, request_id: str, error: APIError) -> None:
        surface = app.surface_at.get(path)
        if surface is not None and gateway.router is not None:
            gateway.router.report.rejected(None, request_id, path, error.status, error.message, surface.name)
    install_error_handlers(app)
    body_rules = BodyRules(gateway.settings.max_body_bytes, gateway.settings.max_bodies_in_flight_bytes)
    edge = {"gateway": gateway, "body_rules": body_rules, "on_refusal": refused,
            "error_shapes": app.error_shapes, "known_path": app.has_route}
    app.add_middleware(Edge, stamp_request_id=True, **edge)
    direct = DirectRoutes(endpoints)
    app.serve_directly(Edge(direct, **edge), frozenset(direct.routes))
    if gateway.settings.cors_origins:
        app.allow_origins(gateway.settings.cors_origins)
    return app


def mount_surfaces(app: GatewayApp, gateway: Gateway) -> dict[str, SurfaceRoute]:
    """Each surface's POST paths: an endpoint each (served directly), declared to FastAPI for
    /openapi.json (the first path of each; the others are aliases)."""
    endpoints: dict[str, SurfaceRoute] = {}
    for surface in gateway.surfaces.values():
        endpoint = SurfaceRoute(surface.name, surface.obj)
        openapi = dict(getattr(surface.obj, "openapi", None) or {})
        responses = openapi.pop("responses", None)
        for number, path in enumerate(surface.paths):
            endpoints[path] = endpoint
            app.surface_at[path] = surface
            app.error_shapes[path] = surface.obj
            app.add_api_route(path, _declared_only(endpoint), methods=["POST"], name=f"{surface.name}:{path}",
                              summary=getattr(surface.obj, "summary", None), description=_doc(surface.obj),
                              openapi_extra=openapi or None, responses=responses, include_in_schema=number == 0)
        for path in surface.error_paths:
            app.error_shapes.setdefault(path, surface.obj)
    return endpoints


def _declared_only(endpoint: SurfaceRoute):
    async def surface_endpoint(request: Request):
        return await endpoint(request)

    return surface_endpoint


def _doc(obj: object) -> str | None:
    doc = type(obj).__doc__
    return inspect.cleandoc(doc) if doc else None


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
