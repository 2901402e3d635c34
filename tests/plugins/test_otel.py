"""The ``otel`` plugin: spans exported over OTLP/HTTP to a receiver in the test, decoded and checked.

The receiver is a standard-library HTTP server on 127.0.0.1 taking ``POST /v1/traces``; it
decodes each protobuf body with opentelemetry-proto's ``ExportTraceServiceRequest``. The
gateway is a real one with the installed plugins, in front of the fake upstream, which
records the headers of every request it gets.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelbroker._plugins.manager import make_plugin_manager
from modelbroker.plugins import otel

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"
REQUEST_HOOKS = ("on_request", "on_attempt", "on_result", "on_failure", "on_request_end")


class Receiver:
    """An OTLP/HTTP trace receiver: every span it got, decoded, with its resource's attributes."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.headers: list[dict] = []  # of each export request
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.headers.append({name.lower(): value for name, value in self.headers.items()})
                if self.path == "/v1/traces":
                    receiver.take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def take(self, export: ExportTraceServiceRequest) -> None:
        for resource_spans in export.resource_spans:
            resource = attributes_of(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    with self.lock:
                        self.spans.append(decoded(span, resource))

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[dict]:
        """The spans, once at least ``count`` have come (or the timeout passed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.spans) >= count:
                    return list(self.spans)
            time.sleep(0.02)
        with self.lock:
            return list(self.spans)


def attributes_of(values) -> dict:
    return {item.key: getattr(item.value, item.value.WhichOneof("value")) for item in values}


def decoded(span: Span, resource: dict) -> dict:
    return {"name": span.name, "kind": span.kind, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
            "parent": span.parent_span_id.hex(), "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
            "status": span.status.code, "message": span.status.message, "trace_state": span.trace_state,
            "attributes": attributes_of(span.attributes), "resource": resource}


@pytest.fixture
def receiver():
    found = Receiver()
    found.thread.start()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.fixture
def traced(monkeypatch, receiver):
    """Tracing on, exporting to the receiver every 50 ms."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    return receiver


def providers(provider, **first):
    return {"reliability": {"retries": 0},
            "providers": [provider("down", model="fail-503", priority=1, **first), provider("up", priority=2)]}


def of_kind(spans: list[dict], kind: int) -> list[dict]:
    return sorted((s for s in spans if s["kind"] == kind), key=lambda s: s["start"])


def test_a_request_and_its_attempts_are_spans_of_the_clients_trace(gateway, provider, upstream, traced, sdk):
    gw = gateway(providers(provider))
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello there"}], max_tokens=50, temperature=0.5,
        extra_headers={"traceparent": TRACEPARENT, "tracestate": "vendor=abc"})
    answer = raw.parse()
    spans = traced.wait_for(3)
    (request,) = of_kind(spans, Span.SPAN_KIND_SERVER)
    failed, succeeded = of_kind(spans, Span.SPAN_KIND_CLIENT)
    assert len(spans) == 3

    # one trace, the client's; the request span under the client's span, the attempts under it
    assert {s["trace_id"] for s in spans} == {TRACE_ID}
    assert request["parent"] == CLIENT_SPAN_ID and request["trace_state"] == "vendor=abc"
    assert failed["parent"] == succeeded["parent"] == request["span_id"]
    assert request["start"] <= failed["start"] < failed["end"] <= succeeded["start"] < succeeded["end"]
    assert succeeded["end"] <= request["end"]

    assert request["name"] == "chat auto"
    assert request["resource"]["service.name"] == "modelbroker"
    assert request["attributes"] == {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "auto", "gen_ai.request.max_tokens": 50,
        "gen_ai.request.temperature": 0.5, "gen_ai.response.model": answer.model,
        "gen_ai.usage.input_tokens": answer.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": answer.usage.completion_tokens,
        "modelbroker.request_id": raw.headers["x-request-id"], "modelbroker.surface": "chat",
        "modelbroker.provider": "up/up", "modelbroker.attempts": 2,
        "modelbroker.cost": pytest.approx(float(raw.headers["x-modelbroker-cost"])),
        "http.request.method": "POST", "http.route": "/v1/chat/completions", "http.response.status_code": 200}
    assert request["status"] == Status.STATUS_CODE_UNSET

    port = int(upstream.url.rsplit(":", 1)[1])
    assert failed["name"] == "chat fail-503" and succeeded["name"] == "chat up"
    assert failed["status"] == Status.STATUS_CODE_ERROR
    assert failed["message"] == "upstream answered 503: fake upstream error 503"
    assert {key: failed["attributes"][key] for key in ("error.type", "http.response.status_code",
                                                       "modelbroker.provider", "modelbroker.outcome")} == {
        "error.type": "503", "http.response.status_code": 503, "modelbroker.provider": "down/fail-503",
        "modelbroker.outcome": "failed"}
    assert succeeded["status"] == Status.STATUS_CODE_UNSET
    assert succeeded["attributes"] == {
        "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "up",
        "gen_ai.request.max_tokens": 50, "gen_ai.request.temperature": 0.5, "gen_ai.response.model": answer.model,
        "gen_ai.usage.input_tokens": answer.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": answer.usage.completion_tokens,
        "server.address": "127.0.0.1", "server.port": port, "modelbroker.provider": "up/up",
        "modelbroker.request_id": raw.headers["x-request-id"], "modelbroker.attempt": 2,
        "modelbroker.cost": pytest.approx(float(raw.headers["x-modelbroker-cost"])),
        "modelbroker.outcome": "ok"}

    # each upstream call carries a traceparent naming its attempt's span, and the client's tracestate
    sent = [r["headers"] for r in upstream.requests]
    assert [h["traceparent"] for h in sent] == [f"00-{TRACE_ID}-{failed['span_id']}-01",
                                                f"00-{TRACE_ID}-{succeeded['span_id']}-01"]
    assert [h["tracestate"] for h in sent] == ["vendor=abc", "vendor=abc"]


def test_a_streamed_request_ends_its_span_when_the_stream_ends(gateway, provider, upstream, traced, sdk):
    upstream.set_behavior("up", {"kind": "ok", "chunks": 4, "chunk_delay_s": 0.05})
    gw = gateway(providers(provider))
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="up", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})  # no traceparent: the gateway starts the trace
    chunks = list(raw.parse())
    usage = chunks[-1].usage
    spans = traced.wait_for(2)
    (request,) = of_kind(spans, Span.SPAN_KIND_SERVER)
    (attempt,) = of_kind(spans, Span.SPAN_KIND_CLIENT)
    assert request["parent"] == "" and attempt["parent"] == request["span_id"]
    assert attempt["trace_id"] == request["trace_id"]
    assert attempt["end"] - attempt["start"] >= 0.15e9  # the stream's whole time: 4 chunks 50 ms apart
    assert attempt["end"] <= request["end"]
    assert request["attributes"]["modelbroker.request_id"] == raw.headers["x-request-id"]
    assert request["attributes"]["http.response.status_code"] == 200
    assert attempt["attributes"]["gen_ai.usage.output_tokens"] == usage.completion_tokens > 0
    assert attempt["attributes"]["modelbroker.outcome"] == "ok"
    (sent,) = upstream.requests
    version, trace_id, parent, flags = sent["headers"]["traceparent"].split("-")
    assert (version, trace_id, parent) == ("00", request["trace_id"], attempt["span_id"])
    assert int(flags, 16) & 1  # sampled (the SDK may set W3C's "random trace id" bit too)


def test_a_request_that_fails_is_an_error_span(gateway, provider, upstream, traced, sdk):
    gw = gateway({"reliability": {"retries": 0}, "providers": [provider("down", model="fail-503")]})
    answer = gw.generate({"prompt": "hi"})
    assert answer.status_code == 502
    spans = traced.wait_for(2)
    (request,) = of_kind(spans, Span.SPAN_KIND_SERVER)
    assert request["name"] == "chat"  # /generate names no model
    assert request["status"] == Status.STATUS_CODE_ERROR
    assert request["attributes"]["error.type"] == "502"
    assert request["attributes"]["modelbroker.request_id"] == answer.headers["x-request-id"]


def test_the_sdk_reads_its_own_environment(gateway, provider, upstream, traced, monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-eu")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-backend-key=k-123")
    gw = gateway({"providers": [provider("up")]})
    assert gw.generate({"prompt": "hi"}).status_code == 200
    (request, _) = traced.wait_for(2)
    assert request["resource"]["service.name"] == "gateway-eu"
    assert traced.headers[0]["x-backend-key"] == "k-123"


def test_the_last_spans_are_exported_at_shutdown(gateway, provider, upstream, traced, monkeypatch):
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # no export on a timer during the test
    gw = gateway({"providers": [provider("up")]})
    assert gw.generate({"prompt": "hi"}).status_code == 200
    assert traced.spans == []
    gw.stop()  # on_shutdown flushes the queue
    assert len(traced.wait_for(2, timeout_s=1.0)) == 2


@pytest.mark.parametrize("environment", [{}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                                              "OTEL_SDK_DISABLED": "true"}])
def test_off_it_implements_no_hook_of_a_request(gateway, provider, upstream, monkeypatch, environment):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    gw = gateway({"providers": [provider("up")]})
    assert gw.generate({"prompt": "hi"}).status_code == 200
    pm, hooks = gw.gateway.pm, gw.gateway.hooks
    assert pm.get_plugin("otel") is otel and pm.get_plugin("otel.tracing") is None
    assert [caller.name for caller in pm.get_hookcallers(otel)] == ["on_startup"]
    for hook in ("on_request", "on_attempt", "on_request_end"):
        assert not hooks.has(hook), hook  # the core skips these without a call
    assert "otel" not in {plugin for plugin, _, _ in hooks.implementations("on_result")}


def test_without_the_packages_it_says_what_to_install_and_runs_without(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setitem(sys.modules, "modelbroker.plugins.otel.tracing", None)  # as if not installed
    pm = make_plugin_manager(load_entrypoints=False)
    with caplog.at_level(logging.WARNING, logger="modelbroker"):
        otel.on_startup(pm)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "runs without tracing: pip install 'modelbroker[otel]'" in line
    assert pm.get_plugin("otel.tracing") is None


def test_an_otlp_protocol_it_does_not_speak_is_said_once(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    pm = make_plugin_manager(load_entrypoints=False)
    with caplog.at_level(logging.WARNING, logger="modelbroker"):
        otel.on_startup(pm)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported" in line
    assert pm.get_plugin("otel.tracing") is None


@pytest.mark.parametrize(("environment", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
])
def test_which_environment_turns_it_on(environment, on):
    assert otel.wanted(environment) is on
