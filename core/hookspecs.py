"""The hooks a modelbroker plugin can implement, in the order a request meets them.

The pluggy project name, ``modelbroker``, is also the entry-point group that
plugins are found in. pluggy calls are synchronous: a hook that does I/O decides
at once whether it handles the call and returns an awaitable, which the core
awaits. Implementations may take any subset of a hook's arguments.

The core calls implementations one by one, latest registered first (``tryfirst``
and ``trylast`` still apply), so an exception is attributed to the plugin that
raised it. Hook wrappers are not supported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import argparse

    import httpx
    from fastapi import APIRouter
    from starlette.datastructures import Headers

    from modelbroker._config.providers import GatewayConfig, ProviderConfig
    from modelbroker._config.settings import Settings
    from modelbroker._routing.health import HealthTracker
    from modelbroker._routing.state import SharedState
    from modelbroker._routing.types import ChatRequest, Completion, Principal, ProviderError, StreamChunk
    from modelbroker._upstream.client import UpstreamHTTP

hookspec = pluggy.HookspecMarker("modelbroker")
hookimpl = pluggy.HookimplMarker("modelbroker")


# --- discovery: what a plugin offers --------------------------------------------


@hookspec
def strategy_names() -> list[str]:
    """Name the routing strategies this plugin implements.

    Called once at startup, on every plugin; the lists are joined. providers.yaml's
    ``strategy:`` must be one of them, or startup stops and lists them all.
    """


@hookspec
def adapter_types() -> list[str]:
    """Name the provider ``type:`` values this plugin's adapter handles.

    Called once at startup, on every plugin; the lists are joined. Every enabled
    provider's ``type`` must be one of them, or startup stops and lists them all.
    """


@hookspec
def register_commands(commands: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``modelbroker`` command line.

    :param commands: the argparse subparsers: ``commands.add_parser(name, help=...)``,
        then ``parser.set_defaults(run=function)``; ``function(args)`` returns the
        exit status. Read settings with ``modelbroker._config.settings.load_settings()``.

    Called on every plugin when the CLI starts; all run.
    """


@hookspec
def api_routes() -> list[APIRouter]:
    """Give FastAPI routers for the gateway to mount (a plugin's own endpoints).

    Called once, when the app is built, on every plugin; every router returned
    is included. A route reaches the plugin's state through
    ``request.app.state.gateway`` (for example ``gateway.pm.get_plugin(name)``).
    """


@hookspec(firstresult=True)
def state_store(settings: Settings) -> SharedState | None:
    """Give the store for state several replicas share (limits, spend, cooldowns).

    Called once at startup. Return None unless the settings ask for your
    backend (the built-in ``redis_state`` answers when ``MODELBROKER_REDIS_URL``
    is set). The first non-None answer wins; with none, the state stays in
    the process (``modelbroker._routing.state.MemoryState``). The store must not raise for an
    outage: see ``modelbroker._routing.state.SharedState``.
    """


# --- lifecycle --------------------------------------------------------------------


@hookspec
def on_startup(
    pm: pluggy.PluginManager,
    settings: Settings,
    config: GatewayConfig,
    client: httpx.AsyncClient,
    state: SharedState,
) -> Awaitable[None] | None:
    """The gateway is starting: open files, start background tasks.

    :param pm: the plugin manager; a plugin may register a stateful object here
        (as pytest's plugins do in ``pytest_configure``).
    :param settings: the process settings (``MODELBROKER_*``).
    :param config: the parsed providers.yaml; ``config.plugins.settings_for(name)``
        gives a plugin its own block.
    :param client: the shared, pooled HTTP client.
    :param state: the gateway's store for state shared by replicas (counters,
        rate-limit windows): Redis when ``MODELBROKER_REDIS_URL`` is set.

    All implementations run; each may return an awaitable, which is awaited.
    Raising stops startup with a message naming the plugin.
    """


@hookspec
def on_shutdown() -> Awaitable[None] | None:
    """The gateway is stopping: flush and close what ``on_startup`` opened.

    All implementations run, even if one raises; each may return an awaitable.
    """


# --- one request ---


@hookspec(firstresult=True)
def authenticate(headers: Headers, path: str) -> Awaitable[Principal] | None:
    """Decide who is calling; runs for every route but ``/health``, before the route.

    :param headers: the request's headers (case-insensitive).
    :param path: the request's path.

    Return None if you have no say (say, no client key exists: the gateway is
    open). Else an awaitable giving the ``Principal``, or raising
    ``modelbroker.APIError`` (401 for a missing or wrong key) to refuse the
    request. The first non-None answer wins. Runs on every request: keep it
    to a dictionary lookup, no database round trip.
    """


@hookspec
def admit(request: ChatRequest, principal: Principal | None) -> Awaitable[None] | None:
    """A generation request is parsed and about to be routed: let it through or refuse it.

    :param request: the parsed request (``request.client`` already names the principal).
    :param principal: who is calling, from ``authenticate``, or None.

    Refuse by raising ``modelbroker.APIError`` (403 for a model the key may not
    use, 429 with a ``retry-after`` header for a rate limit or an exhausted
    budget); the refusal is answered and reported through ``on_rejected``. All
    implementations run; each may return an awaitable.
    """


@hookspec(firstresult=True)
def select_provider(
    request: ChatRequest,
    providers: list[ProviderConfig],
    strategy: str,
    health: HealthTracker,
    config: GatewayConfig,
) -> list[ProviderConfig] | None:
    """Order the providers to try for ``request``.

    :param request: the client's request.
    :param providers: the providers that may serve it now, in file order:
        enabled, matching the request's ``model``, not cooling down, within
        their limits. (When all are cooling down, the one that recovers first.)
    :param strategy: the strategy in force (providers.yaml's, or the request's).
    :param health: read-only use: ``health.latency_ms(p)`` (moving average),
        ``health.p95_ms(p)``, ``health.error_rate(p)``, ``health.samples(p)``
        and ``health.state(p)`` over each provider's recent requests.
    :param config: the providers.yaml in force; ``config.plugins.settings_for(name)``
        gives a strategy its settings (re-read on every call, so a reload applies).

    Return None at once if ``strategy`` is not yours; else the providers to try,
    best first (a subset is allowed). The first non-None answer wins. Must not
    do I/O; may raise only for a bug, which fails the request with a clear error.
    """


@hookspec(firstresult=True)
def call_provider(
    provider: ProviderConfig, request: ChatRequest, client: httpx.AsyncClient, http: UpstreamHTTP
) -> Awaitable[Completion | AsyncIterator[StreamChunk]] | None:
    """Start one attempt at ``provider``; called per attempt until one succeeds.

    :param provider: the provider to call; its ``type`` says which adapter handles it.
    :param request: the client's request; ``request.stream`` asks for a stream.
    :param client: a shared, pooled httpx client, for adapters written against httpx.
    :param http: the gateway's own pooled client (``modelbroker._upstream.client.UpstreamHTTP``, keep-alive
        HTTP/1.1 in ``core/_upstream/http1.py``): several times cheaper per call than httpx or
        aiohttp; the built-in adapters use it. It raises ``ProviderError`` itself for
        transport failures.

    Return None at once if ``provider.type`` is not yours, else an awaitable.
    For a whole answer it gives a ``Completion``. For ``request.stream`` it gives
    an async iterator of ``StreamChunk`` once the upstream has accepted the
    request (a status error is raised by the awaitable, not by the iterator;
    the router counts the awaitable's time as the upstream's);
    an adapter that cannot stream may give a ``Completion`` instead, which is
    sent as one chunk. The awaitable and the iterator raise ``ProviderError``
    for any failure, with a message that holds no secret; the iterator must
    close its upstream connection when closed (``aclose``). The first non-None
    answer wins.
    """


@hookspec
def on_result(
    provider: ProviderConfig,
    request: ChatRequest,
    result: Completion,
    elapsed_ms: float,
    attempt: int,
) -> None:
    """An attempt succeeded.

    :param result: the completion, with ``cost`` filled in and usage as reported.
    :param elapsed_ms: time of this attempt, from the call to its answer.
    :param attempt: 1 for the request's first attempt, 2 for the next, ...

    Every implementation runs. Must be quick (it runs on the event loop for every
    attempt) and must not raise: an exception is logged with the plugin's name.
    """


@hookspec
def on_failure(
    provider: ProviderConfig,
    request: ChatRequest,
    error: ProviderError,
    elapsed_ms: float,
    attempt: int,
) -> None:
    """An attempt failed; the router goes on to the next provider.

    :param error: what went wrong (``error.kind``, ``error.status``, ``error.message``).

    Every implementation runs. Must be quick and must not raise: an exception
    is logged with the plugin's name.
    """


@hookspec
def on_rejected(request: ChatRequest | None, request_id: str, route: str, status: int, reason: str) -> None:
    """A request to a generation route was refused before any attempt was made.

    :param request: the parsed request, or None if it was refused before parsing
        (bad JSON, too large, wrong content type).
    :param request_id: the id returned to the client in ``x-request-id``.
    :param route: the path, e.g. ``/v1/chat/completions``.
    :param status: the HTTP status answered (400, 404, 413, 415, 422, 429, 503, ...).
    :param reason: the error message the client got.

    Every implementation runs (a ledger records it, so every request that
    reached the gateway is accounted for). Must be quick and must not raise.
    """
