"""The hooks a modelbroker plugin can implement, in the order a gateway meets them.

The pluggy project name, ``modelbroker``, is also the entry-point group that plugins
are found in. A plugin marks its implementations with ``modelbroker.hookimpl`` and may
take any subset of a hook's arguments, by name. docs/hooks.md repeats every signature
with an example.

pluggy's calls are synchronous. A hook that does I/O returns an awaitable, which the
core awaits; only ``on_startup``, ``on_shutdown`` and ``admit`` may be written as
``async def``, and a plugin with another hook written so is refused when it loads. The
core calls implementations one at a time (latest registered first; ``tryfirst`` and
``trylast`` apply), so an exception is pinned on the plugin that raised it. Hook
wrappers are not supported.

Strategies and adapters are not hooks that every plugin is asked in turn: a plugin
registers them by name (``register_strategies``, ``register_adapters``), and the router
looks the name up. The objects they build have the methods ``select_provider`` and
``call_provider``, described in ``modelbroker.Strategy`` and ``modelbroker.Adapter``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import argparse

    import httpx
    from fastapi import APIRouter
    from starlette.datastructures import Headers

    from modelbroker._config.providers import GatewayConfig, ProviderConfig
    from modelbroker._config.settings import Settings
    from modelbroker._plugins.registry import Register, RegisterSettings
    from modelbroker._routing.health import Health
    from modelbroker._routing.records import AttemptRecord
    from modelbroker._routing.state import SharedState
    from modelbroker._routing.stored import Stored
    from modelbroker._routing.types import ChatRequest, Completion, Principal, ProviderError, StreamChunk
    from modelbroker.fake_upstream.formats import RegisterFakeFormat

hookspec = pluggy.HookspecMarker("modelbroker")
hookimpl = pluggy.HookimplMarker("modelbroker")


# --- registration: what a plugin offers, asked when a gateway is built -------------------------


@hookspec
def register_settings(register: RegisterSettings) -> None:
    """Declare the pydantic model of a settings block under ``plugins:`` in providers.yaml.

    :param register: ``register(name, Model)``: the block ``plugins: <name>:`` is validated
        by ``Model`` when the gateway starts, in ``modelbroker check`` and on every reload,
        and a problem is told as providers.yaml's are
        (``providers.yaml: plugins.pii_guard.roles: must be a list``). An absent block
        gives the model's defaults. ``config.plugins.settings_for(name)`` then gives the
        model's instance to every hook and object that receives ``config``.

    Called on every plugin, before the other registrations. A name registered twice stops
    the gateway with both plugins named.
    """


@hookspec
def register_strategies(register: Register, config: GatewayConfig) -> None:
    """Register routing strategies by name.

    :param register: ``register(name, factory)``. ``factory`` (a class or a function)
        is called with the arguments it declares, of ``config``, and returns the object
        used for every request: its ``select_provider`` orders the providers (see
        ``modelbroker.Strategy``).
    :param config: the providers.yaml the gateway is being built for, settings validated.

    Called on every plugin when a gateway is built: at startup, in ``modelbroker check``
    and on every reload, which builds new objects from the new file. providers.yaml's
    ``strategy:`` must be a registered name. A name registered twice stops startup,
    ``check`` and a reload, naming both plugins and their distributions.
    """


@hookspec
def register_adapters(register: Register, config: GatewayConfig) -> None:
    """Register adapters, by the provider ``type:`` each one calls.

    :param register: ``register(type, factory)``. ``factory`` is called as for a strategy
        and returns the object whose ``call_provider`` makes one attempt at a provider
        of that type (see ``modelbroker.Adapter``).
    :param config: the providers.yaml the gateway is being built for.

    Called as ``register_strategies`` is. Every enabled provider's ``type`` must be
    registered; a type registered twice stops the gateway with both plugins named.
    """


@hookspec
def register_surfaces(register: Register, config: GatewayConfig) -> None:
    """Register surfaces: APIs that clients speak, each over the one router.

    :param register: ``register(name, factory)``. ``factory`` is called as for a strategy
        and returns the surface (see ``modelbroker.Surface``): the POST paths it answers,
        how it reads a request into a ``ChatRequest``, and how it writes an answer, a
        stream and an error in its own format. The name is recorded with every attempt
        (``AttemptRecord.surface``, app.log, the ledger).
    :param config: the providers.yaml the gateway is started with.

    Called on every plugin once, when a gateway is created (a reload keeps the surfaces:
    their paths are routes). A name or a path registered twice stops the gateway with
    both plugins named. The built-in ``/v1/chat/completions``, ``/v1/responses``,
    ``/v1/messages``, ``/v1/embeddings`` and ``/generate`` are surfaces registered so.
    """


@hookspec
def register_fake_formats(register: RegisterFakeFormat) -> None:
    """Teach the fake upstream (``modelbroker.fake_upstream``) an adapter's wire format.

    :param register: ``register(type, fake_format)``: ``fake_format`` (a
        ``modelbroker.fake_upstream.formats.FakeFormat``) gives the endpoint a provider of
        that ``type`` has on the fake, and reads the requests of that format. Every
        behaviour of the fake (error statuses, cut or stalled streams, delays) then works
        in that format, for the adapter's own tests and the testing kit's.

    Called when a ``FakeUpstream`` is made without formats of its own; all run.
    """


@hookspec
def register_commands(commands: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``modelbroker`` command line.

    :param commands: the argparse subparsers: ``commands.add_parser(name, help=...)``,
        then ``parser.set_defaults(run=function)``; ``function(args)`` returns the exit
        status. Read settings with ``modelbroker.load_settings()``.

    Called on every plugin when the CLI starts; all run. One that raises is named on
    stderr and the others' commands stay.
    """


@hookspec
def api_routes() -> list[APIRouter]:
    """Give FastAPI routers for the gateway to mount (a plugin's own endpoints).

    Called once, when the app is built, on every plugin; every router returned is
    included. A route reaches the gateway with ``modelbroker.gateway_of(request)``.
    """


@hookspec(firstresult=True)
def state_store(settings: Settings) -> SharedState | None:
    """Give the store for state several replicas share (limits, spend, cooldowns).

    :param settings: the process settings (``MODELBROKER_*``).

    Called once, when the server starts, before ``on_startup``. Return None unless the
    settings ask for your backend (the built-in ``redis_state`` answers when
    ``MODELBROKER_REDIS_URL`` is set). The first non-None answer wins; with none, the
    state stays in the process (``modelbroker.MemoryState``). The store must not raise
    for an outage: see ``modelbroker.SharedState``.
    """


# --- lifecycle ---------------------------------------------------------------------------------


@hookspec
def on_startup(
    pm: pluggy.PluginManager,
    settings: Settings,
    config: GatewayConfig,
    client: httpx.AsyncClient,
    state: SharedState,
    health: Health,
) -> Awaitable[None] | None:
    """The gateway is starting: open files, start background tasks, register per-gateway objects.

    :param pm: the plugin manager; a plugin may register an object here
        (``pm.register(obj, name="myplugin.state")``), whose hooks then take part in
        every request.
    :param settings: the process settings (``MODELBROKER_*``).
    :param config: the providers.yaml in force; ``config.plugins.settings_for(name)``
        gives a plugin its validated settings.
    :param client: the shared, pooled httpx client.
    :param state: the store for state shared by replicas (``SharedState``).
    :param health: the gateway's provider health, for reading (``Health``).

    All implementations run, in turn; each may return an awaitable, which is awaited.
    Raising stops startup with a message naming the plugin.
    """


@hookspec
def on_shutdown() -> Awaitable[None] | None:
    """The gateway is stopping: flush and close what ``on_startup`` opened.

    All implementations run, even if one raises; each may return an awaitable.
    """


@hookspec
def readiness() -> Mapping[str, object] | None:
    """Whether this plugin's part of the gateway can serve requests now, for ``GET /health/ready``.

    Return None (nothing to say), or a mapping with ``ok`` (a bool) and, when not ok, ``error``
    (one short sentence for an operator; no secret, no host: the probe is open to all). Its other
    keys are shown as they are. The answer is a check of /health/ready named after the plugin;
    one that is not ok, or that raises, makes the replica unready (503). Called on every probe:
    answer from what the plugin already knows, without I/O.
    """


# --- one request -------------------------------------------------------------------------------


@hookspec(firstresult=True)
def authenticate(headers: Headers, path: str, config: GatewayConfig) -> Awaitable[Principal] | None:
    """Decide who is calling; runs for every route but ``/health`` and its probes (``/health/live``, ``/health/ready``), before the route.

    :param headers: the request's headers (case-insensitive).
    :param path: the request's path.
    :param config: the providers.yaml in force (a reload applies to the next request).

    Return None if you have no say (say, no client key exists: the gateway is open).
    Else an awaitable giving the ``Principal`` (its ``role``, ``client`` or ``admin``,
    decides the admin routes: ``modelbroker.require_admin``), or raising
    ``modelbroker.APIError`` (401 for a missing or wrong key) to refuse the request. The
    first non-None answer wins. Runs on every request: keep it to a dictionary lookup, no
    database round trip.
    """


@hookspec
def on_request(request: ChatRequest, headers: Headers) -> None:
    """A request to a surface is parsed; ``admit`` and the routing come next.

    :param request: the parsed request, with its request id, route, surface and deadline
        filled in (``request.uid`` tells it apart from every other request).
    :param headers: the client's headers (case-insensitive), say its ``traceparent``.

    Called once for each parsed request, before ``admit``; ``on_request_end`` follows,
    however the request ends. Every implementation runs. Must be quick and must not raise:
    an exception is logged with the plugin's name. The core skips the call when no plugin
    implements it.
    """


@hookspec
def admit(request: ChatRequest, principal: Principal | None, config: GatewayConfig) -> Awaitable[None] | None:
    """A generation request is parsed and about to be routed: let it through or refuse it.

    :param request: the parsed request (``request.client`` already names the principal).
    :param principal: who is calling, from ``authenticate``, or None.
    :param config: the providers.yaml in force; a guard reads its settings here, so a
        reload applies them to the next request.

    Refuse by raising ``modelbroker.APIError`` (403 for a model the key may not use, 429
    with a ``retry-after`` header for a rate limit or an exhausted budget); the refusal
    is answered and reported through ``on_rejected``. All implementations run, in turn;
    each may return an awaitable (``async def`` is allowed).
    """


@hookspec(firstresult=True)
def lookup(
    request: ChatRequest, principal: Principal | None, headers: Headers, config: GatewayConfig,
) -> Stored | Awaitable[Stored | None] | None:
    """A request was admitted: answer it from an answer you kept, with no attempt, or not.

    :param request: the admitted request.
    :param principal: who is calling, from ``authenticate``, or None.
    :param headers: the client's headers (case-insensitive), say its ``cache-control``.
    :param config: the providers.yaml in force.

    Return None to let the request be routed, or a ``modelbroker.Stored`` (or an awaitable
    giving one or None): the core answers with it as the provider named in it would have,
    a stream replayed from its chunks, at no cost, and calls ``on_stored_answer``. The
    first non-None answer wins (an awaitable is an answer). Called after ``admit``, before
    the providers are chosen, only while a plugin implements it. An exception, or a failed
    awaitable, is logged with the plugin's name and the request is routed as usual.
    """


@hookspec
def on_stored_answer(provider: ProviderConfig, request: ChatRequest, stored: Stored, record: AttemptRecord) -> None:
    """A request was answered from a ``lookup`` plugin's ``Stored`` answer, with no attempt.

    :param provider: the provider that made the stored answer.
    :param request: the client's request.
    :param stored: the answer given; ``stored.completion.cost`` is what it cost when it was
        made, which this answer saved.
    :param record: the request as one record: attempt 0, outcome ``ok``, ``cache_hit``
        true, no tokens, ``cost`` 0, ``saved_cost``, ``latency_ms`` the request's time.

    Called once, before the answer is sent, instead of ``on_result``: no provider was
    called. Every implementation runs. Must be quick and must not raise: an exception is
    logged with the plugin's name.
    """


@hookspec
def on_attempt(provider: ProviderConfig, request: ChatRequest, attempt: int) -> Mapping[str, str] | None:
    """An attempt is about to call ``provider``: headers for its upstream request, or None.

    :param provider: the provider about to be called.
    :param request: the client's request.
    :param attempt: 1 for the request's first attempt, 2 for the next, ...

    Called right before each attempt's ``call_provider``; ``on_result`` or ``on_failure``
    follows for the same ``attempt``. The headers every implementation returns (later ones
    win on a clash) are added to the upstream calls the adapter makes for this attempt
    through the gateway's clients (``http`` and ``client``), such as a W3C ``traceparent``.
    Must be quick and must not raise: an exception is logged with the plugin's name and
    the attempt goes on without that plugin's headers. The core skips the call when no
    plugin implements it.
    """


@hookspec
def on_result(
    provider: ProviderConfig,
    request: ChatRequest,
    result: Completion,
    elapsed_ms: float,
    attempt: int,
    record: AttemptRecord,
    chunks: list[StreamChunk] | None,
) -> None:
    """An attempt succeeded.

    :param provider: the provider that answered.
    :param request: the client's request.
    :param result: the completion, with ``cost`` filled in and usage as reported.
    :param elapsed_ms: time of this attempt, from the call to its answer (a stream: its end).
    :param attempt: 1 for the request's first attempt, 2 for the next, ...
    :param record: the attempt as one flat record (``AttemptRecord``), built once by
        the core for every logger.
    :param chunks: for a stream, every chunk the upstream sent, in order (kept only while
        some plugin declares this argument); None for a whole answer.

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
    record: AttemptRecord,
) -> None:
    """An attempt failed; the router retries, goes on to the next provider, or answers an error.

    :param error: what went wrong (``error.kind``, ``error.status``, ``error.code``,
        ``error.message``).
    :param record: the attempt as one flat record, as for ``on_result``.

    The other arguments are ``on_result``'s. Every implementation runs. Must be quick
    and must not raise: an exception is logged with the plugin's name.
    """


@hookspec
def on_request_end(request: ChatRequest, status: int) -> None:
    """The answer to a parsed request is sent: its body (a stream: its last event), or an error.

    :param request: the request ``on_request`` was told of.
    :param status: the HTTP status answered (499 if the client left before an answer).

    Called once for each request ``on_request`` was called for, after every ``on_result``
    and ``on_failure`` of its attempts. Every implementation runs. Must be quick and must
    not raise: an exception is logged with the plugin's name. The core skips the call when
    no plugin implements it.
    """


@hookspec
def on_rejected(
    request: ChatRequest | None,
    request_id: str,
    route: str,
    status: int,
    reason: str,
    record: AttemptRecord,
) -> None:
    """A request to a surface (a generation route) was refused before any attempt was made.

    :param request: the parsed request, or None if it was refused before parsing
        (bad JSON, too large, wrong content type, no valid key).
    :param request_id: the id returned to the client in ``x-request-id``.
    :param route: the path, e.g. ``/v1/chat/completions``.
    :param status: the HTTP status answered (400, 401, 404, 413, 415, 422, 429, 503, ...).
    :param reason: the error message the client got.
    :param record: the refusal as a record: attempt 0, outcome ``rejected``.

    Every implementation runs (a ledger records it, so every request that reached the
    gateway is accounted for). Must be quick and must not raise.
    """
