"""The metrics of one gateway: names, labels and buckets (docs/observability.md lists each)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Seconds. LLM calls take from a tenth of a second (a cached or tiny answer) to minutes
#: (long generations, slow reasoning models); the default request timeout is 120 s.
ATTEMPT_BUCKETS_S = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300)
#: Seconds. The gateway's own time for a request: well under a millisecond to a few.
OVERHEAD_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

#: What ``modelbroker_provider_state`` reports: the tracker's states, and ``enabled: false``.
#: A provider's states, as ``Health.state`` gives them, and one for a disabled provider.
HEALTHY, HALF_OPEN, COOLING, DISABLED = "healthy", "half_open", "cooling_down", "disabled"
STATES = (HEALTHY, HALF_OPEN, COOLING, DISABLED)

PROVIDER = ("provider", "model")


class Instruments:
    """The counters, histograms and gauges, registered in ``registry`` (one per gateway).

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) every value is also written to that
    directory; the gauges say how the workers' values are combined (``multiprocess_mode``).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "modelbroker_requests", "Requests answered after one or more attempts, by the provider of the last "
            "attempt and how the request ended (ok, failed, partial, cancelled).",
            [*PROVIDER, "outcome"], registry=r)
        self.rejected = Counter(
            "modelbroker_rejected_requests", "Requests refused before any attempt, by route and HTTP status.",
            ["route", "status"], registry=r)
        self.attempts = Counter(
            "modelbroker_attempts", "Attempts at a provider, by outcome (ok, failed, partial, cancelled).",
            [*PROVIDER, "outcome"], registry=r)
        self.attempt_errors = Counter(
            "modelbroker_attempt_errors", "Attempts that did not succeed, by error kind and upstream HTTP status.",
            [*PROVIDER, "kind", "status"], registry=r)
        self.attempt_duration = Histogram(
            "modelbroker_attempt_duration_seconds", "Time of one attempt, from the call to its answer "
            "(for a stream: to its end).", [*PROVIDER, "outcome"], buckets=ATTEMPT_BUCKETS_S, registry=r)
        self.overhead = Histogram(
            "modelbroker_overhead_seconds", "The gateway's own time for a successful request, upstream waits "
            "taken out.", buckets=OVERHEAD_BUCKETS_S, registry=r)
        self.tokens = Counter(
            "modelbroker_tokens", "Tokens, by type (prompt, completion), as the upstream reported them "
            "(or as estimated).", [*PROVIDER, "type"], registry=r)
        self.cost = Counter(
            "modelbroker_cost", "Spend, in the currency of providers.yaml's prices.", list(PROVIDER), registry=r)
        self.provider_state = Gauge(
            "modelbroker_provider_state", "1 for the provider's current health state, 0 for the others "
            "(healthy, half_open, cooling_down, disabled).", [*PROVIDER, "state"], registry=r,
            multiprocess_mode="livemax")
        self.cooldown_remaining = Gauge(
            "modelbroker_provider_cooldown_remaining_seconds", "Seconds until a cooling-down provider "
            "may be tried again (0 if it is not cooling down).", list(PROVIDER), registry=r,
            multiprocess_mode="livemax")
        self.consecutive_failures = Gauge(
            "modelbroker_provider_consecutive_failures", "Failed attempts in a row at the provider.",
            list(PROVIDER), registry=r, multiprocess_mode="livemax")
        self.in_flight = Gauge(
            "modelbroker_provider_in_flight", "Attempts at the provider in progress.", list(PROVIDER),
            registry=r, multiprocess_mode="livesum")

    @property
    def health_gauges(self) -> tuple[Gauge, ...]:
        return (self.provider_state, self.cooldown_remaining, self.consecutive_failures, self.in_flight)
