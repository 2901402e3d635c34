"""State that several gateway replicas must agree on: counters (spend, rate limits) and
provider cooldowns.

``SharedState`` is the interface; ``MemoryState`` is the in-process default.
A plugin may offer another backend through the ``state_store`` hook (the
built-in ``redis_state`` does when ``MODELBROKER_REDIS_URL`` is set).
Methods never raise for an outage of the backend: an implementation falls
back to local state, says so in ``status()``, and shares again when it can.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class SharedState(Protocol):
    async def add(self, key: str, amount: float, ttl_s: float) -> float:
        """Add ``amount`` to counter ``key`` (created at 0, expiring ``ttl_s`` after it
        was created); return the new total."""

    async def get(self, key: str) -> float:
        """Counter ``key``'s value (0 if absent or expired)."""

    async def add_if_absent(self, key: str, amount: float, ttl_s: float) -> bool:
        """Create counter ``key`` at ``amount`` (expiring in ``ttl_s``) unless it exists;
        True if this call created it. Lets replicas seed a counter once between them."""

    async def take(self, key: str, limit: float, window_s: float, amount: float = 1) -> float | None:
        """Rate limit: if ``amount`` more stays within ``limit`` in the current window of
        ``window_s`` seconds, count it and return None; else return the seconds until the
        window resets (nothing is counted)."""

    async def publish_cooldown(self, provider_id: str, until: float) -> None:
        """Tell the other replicas ``provider_id`` cools down until ``until`` (epoch seconds);
        a later ``until`` already known is kept."""

    async def cooldowns(self) -> dict[str, float]:
        """Provider id -> cooldown end (epoch seconds), for cooldowns not yet over."""

    def status(self) -> dict:
        """For /health: ``{"backend": ..., "shared": bool, ...}``."""

    async def close(self) -> None:
        """Release connections."""


class MemoryState:
    """``SharedState`` kept in this process: exact, fast, and shared with nobody."""

    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        self._counters: dict[str, tuple[float, float]] = {}  # key -> (value, expires)
        self._cooldowns: dict[str, float] = {}

    async def add(self, key: str, amount: float, ttl_s: float) -> float:
        return self.add_now(key, amount, ttl_s)

    def add_now(self, key: str, amount: float, ttl_s: float) -> float:
        now = self.clock()
        value, expires = self._counters.get(key, (0.0, now + ttl_s))
        if expires <= now:
            value, expires = 0.0, now + ttl_s
        self._counters[key] = (value + amount, expires)
        if len(self._counters) > 100_000:
            self._sweep(now)
        return value + amount

    async def get(self, key: str) -> float:
        value, expires = self._counters.get(key, (0.0, 0.0))
        return value if expires > self.clock() else 0.0

    async def add_if_absent(self, key: str, amount: float, ttl_s: float) -> bool:
        return self.add_if_absent_now(key, amount, ttl_s)

    def add_if_absent_now(self, key: str, amount: float, ttl_s: float) -> bool:
        now = self.clock()
        if key in self._counters and self._counters[key][1] > now:
            return False
        self._counters[key] = (amount, now + ttl_s)
        return True

    async def take(self, key: str, limit: float, window_s: float, amount: float = 1) -> float | None:
        return self.take_now(key, limit, window_s, amount)

    def take_now(self, key: str, limit: float, window_s: float, amount: float = 1) -> float | None:
        now = self.clock()
        window = int(now // window_s)
        slot = f"{key}:{window}"
        value, _ = self._counters.get(slot, (0.0, 0.0))
        if value + amount > limit:
            return (window + 1) * window_s - now
        self.add_now(slot, amount, window_s)
        return None

    async def publish_cooldown(self, provider_id: str, until: float) -> None:
        self._cooldowns[provider_id] = max(until, self._cooldowns.get(provider_id, 0.0))

    async def cooldowns(self) -> dict[str, float]:
        now = self.clock()
        return {pid: until for pid, until in self._cooldowns.items() if until > now}

    def status(self) -> dict:
        return {"backend": "memory", "shared": False}

    async def close(self) -> None:
        return None

    def _sweep(self, now: float) -> None:
        self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
