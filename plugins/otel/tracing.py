"""The spans of one gateway: a SERVER span per request, a CLIENT span per attempt.

The request span's parent is the client's W3C ``traceparent`` (and ``tracestate``), if it
sent one. Each attempt span is its child, and the attempt's upstream call carries a
``traceparent`` naming the attempt span, so the upstream's own spans join the trace.
Attributes follow OpenTelemetry's GenAI semantic conventions (``gen_ai.*``), with the
gateway's own under ``modelbroker.*``.

Spans go to a ``BatchSpanProcessor``: ending one appends it to a queue, and a thread of
the SDK exports the batches, so an export never waits on the event loop, nor the loop
on an export. The SDK reads its own environment (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``,
``OTEL_TRACES_SAMPLER``). The provider is this gateway's, not the process's global one:
a process may run several gateways.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from modelbroker import __version__, hookimpl

#: ``service.name`` unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES give one.
SERVICE = "modelbroker"
#: How long shutdown waits for the last spans to be exported.
FLUSH_MS = 5000
#: The parent of a request whose client sent no traceparent: none (given, so the SDK does not
#: look up the task's current context for it).
ROOT = Context()


def resource() -> Resource:
    """The SDK's resource from the environment, named ``modelbroker`` if it named nothing."""
    found = Resource.create({SERVICE_VERSION: __version__})
    if str(found.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        found = found.merge(Resource({SERVICE_NAME: SERVICE}))
    return found


@dataclass(slots=True)
class Traced:
    """One request's spans while it runs: its own, and its attempts' still open."""

    span: Any
    context: Any
    operation: str
    attempts: dict[int, Any] = field(default_factory=dict)
    tried: int = 0
    cost: float = 0.0


class Tracing:
    """The gateway's tracer, and the hooks that make and end the spans.

    Registered by the ``otel`` plugin's ``on_startup`` only when tracing is on.
    """

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("modelbroker", __version__)
        self.propagator = TraceContextTextMapPropagator()
        self.requests: dict[str, Traced] = {}  # request.uid -> its spans, until on_request_end
        self._servers: dict[str, tuple[str | None, int | None]] = {}

    @classmethod
    def from_environment(cls) -> Tracing:
        provider = TracerProvider(resource=resource())
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider)

    @hookimpl
    def on_request(self, request, headers):
        operation = "embeddings" if request.kind == "embeddings" else "chat"
        attributes = {"gen_ai.operation.name": operation, "modelbroker.request_id": request.request_id,
                      "modelbroker.surface": request.surface, "http.request.method": "POST",
                      "http.route": request.route}
        if request.model:
            attributes["gen_ai.request.model"] = request.model
        _request_parameters(request, attributes)
        started = None
        if request.received_at:  # when the gateway got it, not when it was parsed
            started = time.time_ns() - int((time.perf_counter() - request.received_at) * 1e9)
        parent = self.propagator.extract(headers, ROOT) if "traceparent" in headers else ROOT
        span = self.tracer.start_span(f"{operation} {request.model}" if request.model else operation,
                                      context=parent, kind=SpanKind.SERVER, attributes=attributes,
                                      start_time=started)
        self.requests[request.uid] = Traced(span, trace.set_span_in_context(span, ROOT), operation)

    @hookimpl
    def on_attempt(self, provider, request, attempt):
        """Open the attempt's span; its ``traceparent`` goes to the upstream."""
        traced = self.requests.get(request.uid)
        if traced is None:
            return None
        context = self._attempt_span(traced, provider, request, attempt, None).get_span_context()
        # W3C trace context, as TraceContextTextMapPropagator.inject writes it, without a Context made for it
        headers = {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"}
        if context.trace_state:
            headers["tracestate"] = context.trace_state.to_header()
        return headers

    @hookimpl
    def on_result(self, provider, request, record):
        traced = self.requests.get(request.uid)
        if traced is None:
            return
        ended = _usage(record)
        if record.model_used:
            ended["gen_ai.response.model"] = record.model_used
        traced.span.set_attributes({**ended, "modelbroker.provider": provider.id})
        self._end(traced, provider, request, record, ended)

    @hookimpl
    def on_failure(self, provider, request, record):
        traced = self.requests.get(request.uid)
        if traced is None:
            return
        ended = _usage(record)
        ended["error.type"] = str(record.status) if record.status else record.error_kind
        ended["modelbroker.error_kind"] = record.error_kind
        if record.status:
            ended["http.response.status_code"] = record.status
        self._end(traced, provider, request, record, ended, Status(StatusCode.ERROR, record.error))

    @hookimpl
    def on_request_end(self, request, status):
        traced = self.requests.pop(request.uid, None)
        if traced is None:
            return
        for leftover in traced.attempts.values():  # every attempt is reported; this is a safeguard
            leftover.end()
        span = traced.span
        ended = {"http.response.status_code": status, "modelbroker.attempts": traced.tried,
                 "modelbroker.cost": traced.cost}
        if status >= 400:
            ended["error.type"] = str(status)
        span.set_attributes(ended)
        if status >= 500:  # a 4xx is the client's error: the server span's status stays unset
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    @hookimpl
    def on_shutdown(self):
        """Export what is still queued (for up to FLUSH_MS), in a thread: never on the event loop."""
        return asyncio.to_thread(self._close)

    def _close(self) -> None:
        self.provider.force_flush(FLUSH_MS)
        self.provider.shutdown()

    def _attempt_span(self, traced: Traced, provider, request, attempt: int, started: int | None):
        host, port = self._server_of(provider.endpoint)
        attributes = {"gen_ai.operation.name": traced.operation, "gen_ai.system": provider.type,
                      "gen_ai.request.model": provider.model, "modelbroker.provider": provider.id,
                      "modelbroker.request_id": request.request_id, "modelbroker.attempt": attempt}
        if host:
            attributes["server.address"] = host
        if port:
            attributes["server.port"] = port
        _request_parameters(request, attributes)
        span = self.tracer.start_span(f"{traced.operation} {provider.model}", context=traced.context,
                                      kind=SpanKind.CLIENT, attributes=attributes, start_time=started)
        traced.attempts[attempt] = span
        traced.tried += 1
        return span

    def _end(self, traced: Traced, provider, request, record, ended: dict[str, Any],
             status: Status | None = None) -> None:
        """End the attempt's span when the attempt ended (one is made from the record's times
        if the attempt was reported without ``on_attempt``)."""
        span = traced.attempts.pop(record.attempt, None)
        if span is None:
            started = int((record.time - (record.latency_ms or 0.0) / 1000) * 1e9)
            span = self._attempt_span(traced, provider, request, record.attempt, started)
            traced.attempts.pop(record.attempt)
        ended["modelbroker.cost"] = record.cost
        ended["modelbroker.outcome"] = record.outcome
        span.set_attributes(ended)
        if status is not None:
            span.set_status(status)
        span.end(end_time=int(record.time * 1e9))
        traced.cost += record.cost

    def _server_of(self, endpoint: str) -> tuple[str | None, int | None]:
        """``server.address`` and ``server.port`` of an endpoint, worked out once."""
        try:
            return self._servers[endpoint]
        except KeyError:
            pass
        parts = urllib.parse.urlsplit(endpoint)
        try:
            port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
        except ValueError:
            port = None
        self._servers[endpoint] = server = (parts.hostname, port)
        return server


def _request_parameters(request, attributes: dict[str, Any]) -> None:
    if request.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = request.max_tokens
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature


def _usage(record) -> dict[str, Any]:
    return {"gen_ai.usage.input_tokens": record.prompt_tokens, "gen_ai.usage.output_tokens": record.completion_tokens}
