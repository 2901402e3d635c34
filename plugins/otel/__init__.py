"""Plugin ``otel``: OpenTelemetry traces, one span per request and one per attempt.

Off unless the environment asks for OTLP traces: ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set, or ``OTEL_TRACES_EXPORTER=otlp``; and never
with ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. Off, this module
implements only ``on_startup``, which returns at once: no hook of a request has an
implementation, and the core skips those hooks without a call. On, ``on_startup``
registers a ``Tracing`` object (``tracing.py``) for the gateway, with the request hooks.

The OpenTelemetry packages are an extra (``pip install 'modelbroker[otel]'``). Without
them, a gateway asked for traces logs one line saying so and runs without tracing:
tracing watches the gateway and is not part of what it does, and a fleet often sets
``OTEL_*`` for every process it runs, so a missing extra must not stop the answers.
docs/observability.md has the spans, their attributes and the measured cost.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from modelbroker import hookimpl

NAME = "otel"
log = logging.getLogger("modelbroker")

#: Either one turns tracing on; the SDK reads them (and OTEL_EXPORTER_OTLP_HEADERS, ...) itself.
ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces exported over OTLP."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if "none" in exporters:
        return False
    return "otlp" in exporters or any(environ.get(name, "").strip() for name in ENDPOINTS)


def unsupported_protocol(environ: Mapping[str, str]) -> str | None:
    """The OTLP protocol asked for, if it is not the one this plugin speaks (HTTP with protobuf)."""
    for name in PROTOCOLS:
        value = environ.get(name, "").strip().lower()
        if value:
            return None if value == "http/protobuf" else f"{name}={value}"
    return None


@hookimpl
def on_startup(pm):
    """Register this gateway's ``Tracing`` when the environment asks for traces."""
    if not wanted(os.environ):
        return
    protocol = unsupported_protocol(os.environ)
    if protocol is not None:
        log.warning("otel: %s is not supported (the otel plugin exports OTLP over HTTP, http/protobuf, "
                    "port 4318); the gateway runs without tracing", protocol)
        return
    try:
        from modelbroker.plugins.otel.tracing import Tracing
    except ImportError as exc:
        log.warning("otel: OTEL_* asks for traces, but the OpenTelemetry packages are not installed (%s); "
                    "the gateway runs without tracing: pip install 'modelbroker[otel]'", exc.name or exc)
        return
    pm.register(Tracing.from_environment(), name=f"{NAME}.tracing")
