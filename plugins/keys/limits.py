"""Budgets and rate limits per key, counted in the gateway's shared state.

Counters (``SharedState``, so in Redis when ``MODELBROKER_REDIS_URL`` is set):

- ``spend:<name>:day:<YYYY-MM-DD>`` and ``spend:<name>:month:<YYYY-MM>``: cost, in
  the units of ``cost_per_1k_tokens``, charged from the cost the ledger records;
- ``tpm:<name>:<minute>``: tokens used in that minute (minutes since the epoch);
- ``rpm:<name>``: a ``take`` window of 60 s (the store adds the window's number).

Days and months are UTC. A request is refused once the spend has reached the
budget; the request that crosses it is allowed to finish and is charged in full.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from modelbroker import APIError, SharedState
from modelbroker.plugins.keys.store import ClientKey

log = logging.getLogger("modelbroker")

DAY, MONTH = "daily", "monthly"
PERIODS = (DAY, MONTH)
#: Seconds a spend counter outlives its period (it is never read after the period ends).
SPEND_MARGIN_S = 3600.0
MINUTE_S = 60.0


def period_start(period: str, now: datetime) -> datetime:
    """Midnight UTC today, or the first of this month."""
    start = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return start if period == DAY else start.replace(day=1)


def period_end(period: str, now: datetime) -> datetime:
    """When the budget of ``period`` resets: next midnight UTC, or the first of next month."""
    start = period_start(period, now)
    if period == DAY:
        return start + timedelta(days=1)
    return (start + timedelta(days=32)).replace(day=1)


def spend_key(name: str, period: str, now: datetime) -> str:
    now = now.astimezone(timezone.utc)
    return f"spend:{name}:day:{now:%Y-%m-%d}" if period == DAY else f"spend:{name}:month:{now:%Y-%m}"


def tpm_key(name: str, now_s: float) -> str:
    return f"tpm:{name}:{int(now_s // MINUTE_S)}"


def rpm_key(name: str) -> str:
    return f"rpm:{name}"


class Limits:
    """Checks a key's limits before a request, and charges it after each attempt."""

    def __init__(self, state: SharedState, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock
        self._pending: set[asyncio.Task] = set()

    async def check(self, key: ClientKey) -> None:
        """Raise APIError 429 if ``key`` is over a budget or a rate; else count one request."""
        now_s = self.clock()
        now = datetime.fromtimestamp(now_s, timezone.utc)
        for period in PERIODS:
            budget = key.budget_daily if period == DAY else key.budget_monthly
            if budget is not None:
                spent = await self.state.get(spend_key(key.name, period, now))
                if spent >= budget:
                    raise over_budget(key.name, period, spent, budget, now)
        if key.tpm is not None:
            used = await self.state.get(tpm_key(key.name, now_s))
            if used >= key.tpm:
                wait = MINUTE_S - now_s % MINUTE_S
                raise over_rate(f"key {key.name!r} has used its {key.tpm} tokens per minute "
                                f"({used:.0f} this minute)", wait)
        if key.rpm is not None:
            wait = await self.state.take(rpm_key(key.name), key.rpm, MINUTE_S)
            if wait is not None:
                raise over_rate(f"key {key.name!r} has made its {key.rpm} requests per minute", wait)

    def charge(self, name: str, cost: float, tokens: int) -> None:
        """Count an attempt's cost and tokens; the counting runs as a task (hooks must be quick)."""
        if cost <= 0 and tokens <= 0:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._charge(name, cost, tokens))
        except RuntimeError:
            log.error("client keys: no event loop to charge key %r %s for", name, cost)
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def seed(self, spend: dict[str, tuple[float, float]]) -> None:
        """Start the spend counters from the ledger, for each counter that does not exist yet
        (a restart with in-process state; with Redis the counters survive and are kept)."""
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        for name, amounts in spend.items():
            for period, amount in zip(PERIODS, amounts):
                counter = spend_key(name, period, now)
                if amount > 0:
                    await self.state.add_if_absent(counter, amount, _ttl(period, now))

    async def drain(self) -> None:
        """Wait for the charges still being counted (at shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _charge(self, name: str, cost: float, tokens: int) -> None:
        now_s = self.clock()
        now = datetime.fromtimestamp(now_s, timezone.utc)
        try:
            if cost > 0:
                for period in PERIODS:
                    await self.state.add(spend_key(name, period, now), cost, _ttl(period, now))
            if tokens > 0:
                await self.state.add(tpm_key(name, now_s), tokens, 2 * MINUTE_S)
        except Exception:  # noqa: BLE001 - a store must not raise; if one does, say so and go on
            log.exception("client keys: could not charge key %r", name)


def over_budget(name: str, period: str, spent: float, budget: float, now: datetime) -> APIError:
    resets = period_end(period, now)
    when = "midnight UTC" if period == DAY else "the first of next month, UTC"
    span = "today" if period == DAY else "this month"
    message = (f"key {name!r} has used its {period} budget: {_amount(spent)} of {_amount(budget)} "
               f"spent {span} (UTC); it resets at {resets:%Y-%m-%dT%H:%M:%SZ} ({when})")
    retry = str(max(1, math.ceil((resets - now).total_seconds())))
    # x-should-retry: the OpenAI SDKs would otherwise retry a refusal that lasts hours.
    return APIError(429, message, code="budget_exceeded", headers={"retry-after": retry, "x-should-retry": "false"},
                    budget=period, resets_at=resets.strftime("%Y-%m-%dT%H:%M:%SZ"))


def over_rate(what: str, wait_s: float) -> APIError:
    retry = max(1, math.ceil(wait_s))
    return APIError(429, f"{what}; retry in {retry} s", code="rate_limit_exceeded",
                    headers={"retry-after": str(retry)})


def _ttl(period: str, now: datetime) -> float:
    return (period_end(period, now) - now).total_seconds() + SPEND_MARGIN_S


def _amount(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"
