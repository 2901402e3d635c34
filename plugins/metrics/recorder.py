"""The metrics of one gateway, fed by the hooks (``on_result``, ``on_failure``, ``on_rejected``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from modelbroker import GatewayConfig, Health, ProviderConfig, hookimpl
from modelbroker.plugins.metrics.instruments import COOLING, DISABLED, STATES, Instruments
from modelbroker.plugins.metrics.outcomes import RequestOutcomes

log = logging.getLogger("modelbroker")

#: Seconds between a worker's updates of its health gauges in multiprocess mode.
HEALTH_REFRESH_S = 2.0
#: Attempts held in one process before they are added to the instruments (a scrape adds them
#: at once): bounds the memory when nothing scrapes, and the pause: adding each one is two
#: histogram observations on the event loop, so holding many more made one request wait
#: noticeably behind them (docs/performance.md, 'Measurements behind the code').
HELD_MAX = 100


class MetricsRecorder:
    """Registered by ``on_startup`` as ``metrics.recorder``: one per gateway.

    ``multiprocess_dir`` set: values go to that directory, and a scrape (by any
    worker) reads every worker's files; else they live in ``registry`` only.

    In one process, an attempt is held as a tuple (and an ended request as a count) and
    added to the instruments by the next scrape (``flush``), or once ``HELD_MAX`` wait:
    the counters then take one addition per (provider, outcome) instead of six per
    request, each behind prometheus_client's lock and checks (before, the hooks were a
    noticeable share of a request's instructions; docs/performance.md, 'Measurements behind
    the code'). With several workers, values are written as they come,
    since a scrape reads the other workers' files, not their memory.
    """

    def __init__(self, config: GatewayConfig, multiprocess_dir: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self.instruments = Instruments(self.registry)
        self.multiprocess_dir = multiprocess_dir
        self.outcomes = RequestOutcomes(self._count_request, config.reliability.request_timeout_s)
        self._providers = {p.id: p for p in config.providers}  # what a worker's refresher reports
        self._refresher: asyncio.Task | None = None
        self._labelled: dict[tuple[str, str, str], tuple] = {}
        self._held: list[tuple] = []
        self._ended: dict[object, int] = {}  # requests ended since the last flush, by their counter
        self._hold = not multiprocess_dir
        self._requests: dict[tuple[str, str, str], object] = {}
        if multiprocess_dir:
            self.scrape_registry = CollectorRegistry()
            MultiProcessCollector(self.scrape_registry, path=multiprocess_dir)
        else:
            self.scrape_registry = self.registry

    # --- hooks: quick, and never raising ----------------------------------------------------

    @hookimpl
    def on_result(self, provider, request, record):
        try:
            self._attempt(provider, record)
            self.outcomes.attempt_ended(request, _labels(provider), record.outcome)
        except Exception:
            log.warning("metrics: an attempt was not counted", exc_info=True)

    @hookimpl
    def on_failure(self, provider, request, record):
        try:
            self._attempt(provider, record)
            status = "" if record.status is None else str(record.status)
            self.instruments.attempt_errors.labels(*_labels(provider), record.error_kind, status).inc()
            self.outcomes.attempt_ended(request, _labels(provider), record.outcome)
        except Exception:
            log.warning("metrics: a failed attempt was not counted", exc_info=True)

    @hookimpl
    def on_rejected(self, route, status):
        try:
            self.instruments.rejected.labels(route, str(status)).inc()
        except Exception:
            log.warning("metrics: a rejected request was not counted", exc_info=True)

    def _attempt(self, provider: ProviderConfig, record) -> None:
        self._held.append((self._children(provider, record.outcome), record.latency_ms / 1000,
                           max(0, record.prompt_tokens), max(0, record.completion_tokens),
                           max(0.0, record.cost or 0.0), record.overhead_ms))
        if not self._hold or len(self._held) >= HELD_MAX:
            self.flush()

    def flush(self) -> None:
        """Add the attempts and requests held so far to the instruments (before every scrape)."""
        ended, self._ended = self._ended, {}
        for counter, count in ended.items():
            counter.inc(count)
        held, self._held = self._held, []
        sums: dict[tuple, list] = {}
        overhead = self.instruments.overhead
        for children, seconds, prompt, completion, cost, overhead_ms in held:
            children[1].observe(seconds)
            if overhead_ms is not None:
                overhead.observe(overhead_ms / 1000)
            total = sums.get(children)
            if total is None:
                sums[children] = [1, prompt, completion, cost]
            else:
                total[0] += 1
                total[1] += prompt
                total[2] += completion
                total[3] += cost
        for (attempts, _, prompt, completion, spend), (count, prompt_sum, completion_sum, cost_sum) in sums.items():
            attempts.inc(count)
            if prompt_sum:
                prompt.inc(prompt_sum)
            if completion_sum:
                completion.inc(completion_sum)
            if cost_sum:
                spend.inc(cost_sum)

    def _children(self, provider: ProviderConfig, outcome: str) -> tuple:
        """The labelled metrics of one (provider, outcome), looked up once: ``.labels()`` takes a
        lock and builds a key on every call, which is most of a counter's cost."""
        key = (provider.name, provider.model, outcome)
        children = self._labelled.get(key)
        if children is None:
            self._providers.setdefault(provider.id, provider)
            labels = _labels(provider)
            instruments = self.instruments
            children = self._labelled[key] = (
                instruments.attempts.labels(*labels, outcome),
                instruments.attempt_duration.labels(*labels, outcome),
                instruments.tokens.labels(*labels, "prompt"),
                instruments.tokens.labels(*labels, "completion"),
                instruments.cost.labels(*labels),
            )
        return children

    def _count_request(self, provider: str, model: str, outcome: str) -> None:
        """One request ended (``RequestOutcomes`` decides when): counted with the held attempts."""
        key = (provider, model, outcome)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.instruments.requests.labels(provider, model, outcome)
        self._ended[counter] = self._ended.get(counter, 0) + 1
        if not self._hold:
            self.flush()

    # --- health, read from the gateway's tracker ----------------------------------------------

    def refresh_health(self, health: Health, providers: Iterable[ProviderConfig]) -> None:
        """Set the health gauges from ``health``; in one process, only ``providers`` are shown."""
        gauges = self.instruments
        if not self.multiprocess_dir:
            for gauge in gauges.health_gauges:
                gauge.clear()  # a provider removed by a reload disappears
        for provider in providers:
            labels = _labels(provider)
            row = health.report(provider) if provider.enabled else {"state": DISABLED}
            for state in STATES:
                gauges.provider_state.labels(*labels, state).set(1 if row["state"] == state else 0)
            gauges.cooldown_remaining.labels(*labels).set(row.get("cooling_down_for_s", 0.0)
                                                         if row["state"] == COOLING else 0.0)
            gauges.consecutive_failures.labels(*labels).set(row.get("consecutive_failures", 0))
            gauges.in_flight.labels(*labels).set(row.get("in_flight", 0))

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, health: Health) -> None:
        """In multiprocess mode, keep this worker's health gauges current."""
        if self.multiprocess_dir:
            self._refresher = asyncio.create_task(self._refresh_forever(health), name="modelbroker-metrics")

    async def _refresh_forever(self, health: Health) -> None:
        while True:
            await asyncio.sleep(HEALTH_REFRESH_S)
            try:
                self.refresh_health(health, list(self._providers.values()))
            except Exception:
                log.warning("metrics: the health gauges were not updated", exc_info=True)

    @hookimpl
    async def on_shutdown(self):
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        self.outcomes.close()
        self.flush()
        if self.multiprocess_dir:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # its live gauges leave the sums


def _labels(provider: ProviderConfig) -> tuple[str, str]:
    return provider.name, provider.model
