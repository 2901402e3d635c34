"""Where kept answers live: in the process (bounded in bytes, least recently used out
first), or in Redis (``MODELBROKER_REDIS_URL``), shared by the replicas.

Both expire an answer ``ttl_s`` after it was kept. A Redis that fails is a miss, logged
once until it answers again, never a failed request.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

log = logging.getLogger("modelbroker")

#: Redis keys are this prefix and the request's hash.
REDIS_PREFIX = "modelbroker:cache:"
#: Seconds a failing Redis is left alone before it is asked again.
RETRY_S = 1.0


class MemoryStore:
    """Answers in this process, at most ``max_bytes`` of them (their encoded size)."""

    name = "memory"
    #: ``get`` and ``put`` answer at once: the cache calls them without a coroutine or a task.
    awaits = False

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        data, expires = found
        if time.monotonic() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return data

    def put(self, key: str, data: bytes, ttl_s: float) -> None:
        if len(data) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (data, time.monotonic() + ttl_s)
        self.bytes += len(data)
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        data, _ = self._entries.pop(key)
        self.bytes -= len(data)

    def __len__(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0


class RedisStore:
    """Answers in Redis under ``modelbroker:cache:<hash>``, each with its expiry (SET EX)."""

    name = "redis"
    awaits = True

    def __init__(self, url: str, *, timeout_s: float = 0.25, prefix: str = REDIS_PREFIX) -> None:
        import redis.asyncio
        import redis.exceptions

        self.redis = redis.asyncio.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                            retry_on_timeout=False)
        self.errors = (redis.exceptions.RedisError, OSError)
        self.prefix = prefix
        self.bytes = 0  # what this process wrote; Redis keeps the count of what is held
        self.failing = False
        self.retry_at = 0.0  # while failing, Redis is asked again only after this (monotonic)

    async def get(self, key: str) -> bytes | None:
        if self.failing and time.monotonic() < self.retry_at:
            return None  # a miss at once, not a timeout per request
        try:
            data = await self.redis.get(self.prefix + key)
        except self.errors as exc:
            self._failed(exc)
            return None
        self._answered()
        return data

    async def put(self, key: str, data: bytes, ttl_s: float) -> None:
        if self.failing and time.monotonic() < self.retry_at:
            return
        try:
            await self.redis.set(self.prefix + key, data, px=max(1, int(ttl_s * 1000)))
        except self.errors as exc:
            self._failed(exc)
            return
        self._answered()
        self.bytes += len(data)

    def _failed(self, exc: BaseException) -> None:
        self.retry_at = time.monotonic() + RETRY_S
        if not self.failing:
            self.failing = True
            log.warning("cache: Redis is unreachable (%s: %s); requests are routed as misses until it is back",
                        type(exc).__name__, exc)

    def _answered(self) -> None:
        if self.failing:
            self.failing = False
            log.warning("cache: Redis answers again")

    async def close(self) -> None:
        await self.redis.aclose()
