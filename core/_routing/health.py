"""Provider health: the circuit breaker, rate-limit pacing, per-provider limits, and the
moving windows that strategies read (latency, p95, error rate).

States: ``healthy`` -> (N consecutive failures, or at once on 401/403/404, an
exhausted quota or a 429 with Retry-After) -> ``cooling_down`` until a deadline ->
``half_open`` (one trial request) -> ``healthy`` on success, or back to cooling
down, for longer each time, on failure. docs/reliability.md gives the reasoning.

Everything here is in-process state of one gateway; times are ``time.monotonic()``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from modelbroker._config.providers import ProviderConfig, ReliabilityConfig
from modelbroker._routing import policy
from modelbroker._routing.types import ErrorKind, ProviderError, RateLimit, Usage
from modelbroker.hookspecs import hookimpl

log = logging.getLogger("modelbroker")

HEALTHY, COOLING, HALF_OPEN = "healthy", "cooling_down", "half_open"

#: Seconds kept of recent requests for rpm and tpm.
MINUTE = 60.0


class Health(Protocol):
    """What the gateway has measured of each provider, for strategies, plugins and routes to read.

    "Recent" is the last ``reliability.window`` attempts. The first three are None before
    any data. ``state`` is ``healthy``, ``cooling_down`` or ``half_open``; ``report`` is the
    provider's row in /health.
    """

    def latency_ms(self, provider: ProviderConfig) -> float | None:
        """The moving average of successful attempts' latency."""

    def p95_ms(self, provider: ProviderConfig) -> float | None:
        """The recent p95 latency of successful attempts."""

    def error_rate(self, provider: ProviderConfig) -> float | None:
        """The share of recent attempts that failed."""

    def samples(self, provider: ProviderConfig) -> int:
        """How many recent attempts there were."""

    def state(self, provider: ProviderConfig) -> str:
        """``healthy``, ``cooling_down`` or ``half_open``."""

    def report(self, provider: ProviderConfig) -> dict:
        """The provider's health as /health shows it."""


@dataclass
class ProviderHealth:
    """What the gateway knows about one provider."""

    state: str = HEALTHY
    consecutive_failures: int = 0
    cooldowns: int = 0
    cooling_until: float = 0.0
    trial_in_flight: bool = False
    trial: object = None  # which attempt is the half-open trial (see HealthTracker.begin)
    in_flight: int = 0
    paced_until: float = 0.0
    latency_ewma_ms: float | None = None
    outcomes: deque = field(default_factory=deque)  # (ok, latency_ms), newest last
    requests: deque = field(default_factory=deque)  # start times, for rpm
    tokens: deque = field(default_factory=deque)  # (time, tokens), for tpm
    last_error: str | None = None


class HealthTracker:
    """Health of every provider of one gateway.

    The router consults it before each attempt; it learns how each attempt went
    the way every plugin does, through ``on_result`` and ``on_failure`` (the
    gateway registers it as the plugin ``health``), so it hears of each attempt
    exactly once, streams included.
    """

    def __init__(self, policy: ReliabilityConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self._health: dict[str, ProviderHealth] = {}
        #: Called with (provider id, cooldown end in epoch seconds) when this replica starts
        #: or extends a cooldown, so other replicas can honour it (see Gateway).
        self.on_cooldown: Callable[[str, float], None] | None = None

    def adopt_cooldown(self, provider: ProviderConfig, until_epoch: float) -> None:
        """Honour a cooldown another replica found: skip ``provider`` until ``until_epoch``."""
        remaining = until_epoch - time.time()
        health = self.of(provider)
        until = self.clock() + remaining
        if remaining <= 0 or (health.state == COOLING and health.cooling_until >= until - 0.5):
            return  # over, or already known here
        was = health.state
        health.cooling_until = max(health.cooling_until if was == COOLING else 0.0, until)
        health.state, health.trial_in_flight = COOLING, False
        log.warning("provider %s: cooling down for %.1f s, as another replica found (was %s)",
                    provider.id, remaining, was)

    @hookimpl(tryfirst=True)
    def on_result(self, provider, request, result, elapsed_ms, attempt):
        self.succeeded(provider, elapsed_ms, result.usage, result.rate_limit, (id(request), attempt))

    @hookimpl(tryfirst=True)
    def on_failure(self, provider, request, error, elapsed_ms, attempt):
        self.failed(provider, error, elapsed_ms, (id(request), attempt))

    def of(self, provider: ProviderConfig) -> ProviderHealth:
        health = self._health.get(provider.id)
        if health is None:
            health = self._health[provider.id] = ProviderHealth()
        return health

    # --- may this provider take a request now? -------------------------------------

    def available(self, provider: ProviderConfig, estimated_tokens: int = 0) -> bool:
        """True if the provider may take a request now (a half-open one: if its trial is free)."""
        health = self.of(provider)
        now = self.clock()
        if health.state == COOLING and now >= health.cooling_until:
            health.state = HALF_OPEN
            log.info("provider %s: cooldown over, half-open: the next request is a trial", provider.id)
        if health.state == COOLING or (health.state == HALF_OPEN and health.trial_in_flight):
            return False
        return now >= health.paced_until and self.within_limits(provider, estimated_tokens)

    def may_retry(self, provider: ProviderConfig, estimated_tokens: int = 0) -> bool:
        """Whether a retry that has waited out its pause may go ahead: the provider's limits leave
        room and no other request's half-open trial runs there. A cooldown begun meanwhile does
        not stop it (docs/reliability.md, "Known limits")."""
        health = self.of(provider)
        if health.state == HALF_OPEN and health.trial_in_flight:
            return False
        return self.within_limits(provider, estimated_tokens)

    def within_limits(self, provider: ProviderConfig, estimated_tokens: int = 0) -> bool:
        """The provider's own ``max_concurrency``, ``rpm`` and ``tpm`` leave room for one more request."""
        health = self.of(provider)
        if provider.max_concurrency is not None and health.in_flight >= provider.max_concurrency:
            return False
        if provider.rpm is None and provider.tpm is None:
            return True
        self._expire(health)
        if provider.rpm is not None and len(health.requests) >= provider.rpm:
            return False
        if provider.tpm is not None:
            used = sum(n for _, n in health.tokens)
            if used + estimated_tokens > provider.tpm and used > 0:
                return False
        return True

    def cooling_ends(self, provider: ProviderConfig) -> float:
        """When the provider may be tried again (now, if it may already)."""
        health = self.of(provider)
        return max(health.cooling_until if health.state == COOLING else 0.0, health.paced_until)

    # --- one attempt ---------------------------------------------------------------

    def begin(self, provider: ProviderConfig, attempt: object = None) -> None:
        """An attempt starts; ``attempt`` names it (the router gives ``(id(request), number)``),
        so that, while half-open, only the trial's own end decides the provider's state."""
        health = self.of(provider)
        health.in_flight += 1
        if health.state == HALF_OPEN and not health.trial_in_flight:
            health.trial_in_flight, health.trial = True, attempt
        if provider.rpm is not None:
            health.requests.append(self.clock())

    def _beside_the_trial(self, health: ProviderHealth, attempt: object) -> bool:
        """An attempt that began before the trial (or beside it) and ends while it runs: its
        outcome is counted, but the trial alone says whether the provider is back."""
        return health.trial_in_flight and attempt != health.trial

    def succeeded(self, provider: ProviderConfig, latency_ms: float, usage: Usage | None,
                  rate_limit: RateLimit | None, attempt: object = None) -> None:
        health = self.of(provider)
        health.in_flight = max(0, health.in_flight - 1)
        self._record(health, True, latency_ms)
        alpha = 0.2
        ewma = health.latency_ewma_ms
        health.latency_ewma_ms = latency_ms if ewma is None else ewma + alpha * (latency_ms - ewma)
        if provider.tpm is not None and usage is not None:
            health.tokens.append((self.clock(), usage.total_tokens))
        self._pace(provider, health, rate_limit)
        if self._beside_the_trial(health, attempt):
            return
        health.consecutive_failures = 0
        if health.state != HEALTHY:
            log.warning("provider %s: healthy again (state was %s)", provider.id, health.state)
        health.state, health.cooldowns, health.trial_in_flight = HEALTHY, 0, False

    def failed(self, provider: ProviderConfig, error: ProviderError, latency_ms: float,
               attempt: object = None) -> None:
        health = self.of(provider)
        health.in_flight = max(0, health.in_flight - 1)
        beside_the_trial = self._beside_the_trial(health, attempt)
        if error.kind == ErrorKind.CANCELLED or policy.is_request_fault(error):
            if not beside_the_trial:
                health.trial_in_flight = False  # not the provider's fault: no verdict on it
            return
        self._record(health, False, latency_ms)
        self._pace(provider, health, error.rate_limit)
        if beside_the_trial:
            return
        health.consecutive_failures += 1
        health.last_error = str(error)[:200]
        threshold = health.consecutive_failures >= self.policy.failure_threshold
        if policy.cools_at_once(error) or threshold or health.state != HEALTHY:
            self._cool(provider, health, error)

    # --- what strategies and /health read -------------------------------------------

    def error_rate(self, provider: ProviderConfig) -> float | None:
        outcomes = self.of(provider).outcomes
        return None if not outcomes else sum(1 for ok, _ in outcomes if not ok) / len(outcomes)

    def p95_ms(self, provider: ProviderConfig) -> float | None:
        latencies = sorted(ms for ok, ms in self.of(provider).outcomes if ok)
        return latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)] if latencies else None

    def latency_ms(self, provider: ProviderConfig) -> float | None:
        return self.of(provider).latency_ewma_ms

    def samples(self, provider: ProviderConfig) -> int:
        return len(self.of(provider).outcomes)

    def state(self, provider: ProviderConfig) -> str:
        self.available(provider)  # moves an expired cooldown to half-open
        return self.of(provider).state

    def report(self, provider: ProviderConfig) -> dict:
        """The provider's health for /health: state, until when, error rate, latency."""
        health = self.of(provider)
        state = self.state(provider)
        now = self.clock()
        row: dict = {"state": state, "consecutive_failures": health.consecutive_failures}
        if state == COOLING:
            remaining = max(0.0, health.cooling_until - now)
            row["cooling_down_for_s"] = round(remaining, 1)
            row["cooling_down_until"] = _wall_clock(remaining)
        if health.paced_until > now:
            row["paced_for_s"] = round(health.paced_until - now, 1)
        rate = self.error_rate(provider)
        row["recent_error_rate"] = None if rate is None else round(rate, 3)
        row["recent_requests"] = len(health.outcomes)
        row["p95_ms"] = _round(self.p95_ms(provider))
        row["latency_ewma_ms"] = _round(health.latency_ewma_ms)
        row["in_flight"] = health.in_flight
        if health.last_error and state != HEALTHY:
            row["last_error"] = health.last_error
        return row

    # --- internals -------------------------------------------------------------------

    def _record(self, health: ProviderHealth, ok: bool, latency_ms: float) -> None:
        health.outcomes.append((ok, latency_ms))
        if len(health.outcomes) > self.policy.window:
            health.outcomes.popleft()

    def _cool(self, provider: ProviderConfig, health: ProviderHealth, error: ProviderError) -> None:
        was = health.state
        # A failure while already cooling down (an attempt that was in flight when the
        # cooldown began) is not a repeat: it may extend the cooldown, never double it.
        if was != COOLING:
            health.cooldowns += 1
        until = self.clock() + policy.cooldown_s(self.policy, health.cooldowns, error)
        health.cooling_until = max(health.cooling_until if was == COOLING else 0.0, until)
        health.state, health.trial_in_flight = COOLING, False
        if self.on_cooldown is not None:
            self.on_cooldown(provider.id, time.time() + (health.cooling_until - self.clock()))
        if was == COOLING:
            log.info("provider %s: failed while cooling down; cooling down for %.1f s more (last: %s)",
                     provider.id, health.cooling_until - self.clock(), error)
            return
        log.warning(
            "provider %s: cooling down for %.1f s (was %s; %d consecutive failures; last: %s)",
            provider.id, health.cooling_until - self.clock(), was, health.consecutive_failures, error,
        )

    def _pace(self, provider: ProviderConfig, health: ProviderHealth, rate_limit: RateLimit | None) -> None:
        """Pass the provider over until its quota resets when its headers say it is spent."""
        if rate_limit is None:
            return
        waits = []
        if rate_limit.remaining_requests is not None and rate_limit.remaining_requests <= 0:
            waits.append(rate_limit.reset_requests_s or 1.0)
        if rate_limit.remaining_tokens is not None and rate_limit.remaining_tokens <= 0:
            waits.append(rate_limit.reset_tokens_s or 1.0)
        if waits:
            wait = min(max(waits), self.policy.max_cooldown_s)
            health.paced_until = max(health.paced_until, self.clock() + wait)
            log.info("provider %s: its rate limit is spent; passed over for %.1f s", provider.id, wait)

    def _expire(self, health: ProviderHealth) -> None:
        horizon = self.clock() - MINUTE
        while health.requests and health.requests[0] < horizon:
            health.requests.popleft()
        while health.tokens and health.tokens[0][0] < horizon:
            health.tokens.popleft()


def _wall_clock(seconds_from_now: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(time.time() + seconds_from_now, timezone.utc).isoformat(timespec="seconds")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
