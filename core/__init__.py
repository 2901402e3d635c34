"""modelbroker: an LLM gateway built as a small core plus pluggy plugins.

This module is the public API for plugins: every name in ``__all__`` keeps working
through the 1.x releases (docs/hooks.md, "Compatibility"). So do the modules
``modelbroker.hookspecs`` (the hooks), ``modelbroker.testing`` (the testing kit) and
``modelbroker.fake_upstream`` (the fake model server). Every module whose name starts
with an underscore is internal and may change in any release.
"""

# The only place the version is written: pyproject.toml reads this line without importing
# anything. Set before the imports below: internal modules read it while this package initializes.
__version__ = "1.1.0"

import importlib
from typing import TYPE_CHECKING

from modelbroker.hookspecs import hookimpl

if TYPE_CHECKING:  # the public names, for type checkers and editors; at run time, see __getattr__
    from modelbroker._cli.tables import format_table
    from modelbroker._config.messages import ConfigError
    from modelbroker._config.providers import GatewayConfig, ProviderConfig, ReliabilityConfig
    from modelbroker._config.settings import Settings, load_settings
    from modelbroker._plugins.registry import Adapter, Strategy
    from modelbroker._routing.errors import APIError
    from modelbroker._routing.health import Health
    from modelbroker._routing.pricing import cost_of, estimate_tokens, estimated_cost, estimated_usage
    from modelbroker._routing.records import AttemptRecord
    from modelbroker._routing.router import Routed
    from modelbroker._routing.state import MemoryState, SharedState
    from modelbroker._routing.stored import Stored
    from modelbroker._routing.streaming import StreamEnd, single_chunk_stream
    from modelbroker._routing.types import (
        ChatRequest,
        Completion,
        ErrorKind,
        Native,
        Principal,
        ProviderError,
        RateLimit,
        StreamChunk,
        Usage,
    )
    from modelbroker._routing.view import GatewayView, gateway_of
    from modelbroker._server.access import caller_of, require_admin
    from modelbroker._server.bodies import checked_json, invalid_fields, json_object
    from modelbroker._server.openapi import request_body_schema
    from modelbroker._server.responses import error_responses
    from modelbroker._server.sse import sse_event
    from modelbroker._server.surfaces import Incoming, Surface
    from modelbroker._upstream.client import UpstreamHTTP, UpstreamReply, UpstreamStream, open_event_stream
    from modelbroker._upstream.errors import (
        duration_seconds,
        error_message,
        int_header,
        rate_limit_of,
        redact,
        retry_after_seconds,
        safe_message,
        snippet,
        status_error,
        transport_error,
    )
    from modelbroker._upstream.sse import parse_event, sse_data

#: Each public name's module. A name's module is imported when the name is first used, so
#: that ``import modelbroker`` alone (``modelbroker --help``) does not load pydantic, httpx
#: and Starlette.
_SOURCES = {
    "modelbroker._cli.tables": ("format_table",),
    "modelbroker._config.messages": ("ConfigError",),
    "modelbroker._config.providers": ("GatewayConfig", "ProviderConfig", "ReliabilityConfig"),
    "modelbroker._config.settings": ("Settings", "load_settings"),
    "modelbroker._plugins.registry": ("Adapter", "Strategy"),
    "modelbroker._routing.errors": ("APIError",),
    "modelbroker._routing.health": ("Health",),
    "modelbroker._routing.pricing": ("cost_of", "estimate_tokens", "estimated_cost", "estimated_usage"),
    "modelbroker._routing.records": ("AttemptRecord",),
    "modelbroker._routing.router": ("Routed",),
    "modelbroker._routing.state": ("MemoryState", "SharedState"),
    "modelbroker._routing.stored": ("Stored",),
    "modelbroker._routing.streaming": ("StreamEnd", "single_chunk_stream"),
    "modelbroker._routing.types": ("ChatRequest", "Completion", "ErrorKind", "Native", "Principal",
                                   "ProviderError", "RateLimit", "StreamChunk", "Usage"),
    "modelbroker._routing.view": ("GatewayView", "gateway_of"),
    "modelbroker._server.access": ("caller_of", "require_admin"),
    "modelbroker._server.bodies": ("checked_json", "invalid_fields", "json_object"),
    "modelbroker._server.openapi": ("request_body_schema",),
    "modelbroker._server.responses": ("error_responses",),
    "modelbroker._server.sse": ("sse_event",),
    "modelbroker._server.surfaces": ("Incoming", "Surface"),
    "modelbroker._upstream.client": ("UpstreamHTTP", "UpstreamReply", "UpstreamStream", "open_event_stream"),
    "modelbroker._upstream.errors": ("duration_seconds", "error_message", "int_header", "rate_limit_of", "redact",
                                     "retry_after_seconds", "safe_message", "snippet", "status_error",
                                     "transport_error"),
    "modelbroker._upstream.sse": ("parse_event", "sse_data"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next use is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    # marking hook implementations
    "hookimpl",
    # what travels through the hooks
    "APIError",
    "AttemptRecord",
    "ChatRequest",
    "Completion",
    "ErrorKind",
    "Native",
    "Principal",
    "ProviderError",
    "RateLimit",
    "StreamChunk",
    "Usage",
    # configuration
    "ConfigError",
    "GatewayConfig",
    "ProviderConfig",
    "ReliabilityConfig",
    "Settings",
    "load_settings",
    # strategies: what they return, what they read
    "Strategy",
    "Health",
    "cost_of",
    "estimate_tokens",
    "estimated_cost",
    "estimated_usage",
    # adapters: calling an upstream, reading its answers and errors
    "Adapter",
    "UpstreamHTTP",
    "UpstreamReply",
    "UpstreamStream",
    "open_event_stream",
    "single_chunk_stream",
    "sse_data",
    "parse_event",
    "status_error",
    "transport_error",
    "error_message",
    "redact",
    "safe_message",
    "snippet",
    "retry_after_seconds",
    "rate_limit_of",
    "duration_seconds",
    "int_header",
    # surfaces: the APIs clients speak
    "Surface",
    "Incoming",
    "Routed",
    "StreamEnd",
    "Stored",
    "json_object",
    "checked_json",
    "invalid_fields",
    "request_body_schema",
    "sse_event",
    # state shared by replicas
    "SharedState",
    "MemoryState",
    # plugins' own routes and commands
    "GatewayView",
    "gateway_of",
    "caller_of",
    "require_admin",
    "error_responses",
    "format_table",
    "__version__",
]
