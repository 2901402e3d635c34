"""State store ``redis_state``: shared state in Redis when ``MODELBROKER_REDIS_URL`` is set.

Counters and rate-limit windows are Lua scripts (one atomic round trip each)
on keys that expire; cooldowns are a sorted set scored by their end. If Redis
goes away, every call falls back at once to in-process state (``MemoryState``),
the outage is logged once and shown in /health, and a background probe
resumes sharing when Redis answers again. Counts made locally during an
outage are not merged back.

The URL is shown (in /health and the logs) as ``scheme://host:port/db``, rebuilt
from its parsed parts: never its user, password or query string. A URL that parses
more than one way (a password with an unencoded ``/``, ``#`` or ``?``) is refused.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from modelbroker import MemoryState, hookimpl

log = logging.getLogger("modelbroker")
T = TypeVar("T")

PREFIX = "modelbroker:"
PROBE_INTERVAL_S = 1.0
SCHEMES = ("redis", "rediss", "unix")
#: Shown instead of a URL that parses more than one way.
UNPARSED_URL = "redis://<url not shown: it does not parse>"
#: Why such a URL is refused; it holds no part of the URL.
UNPARSED = ("MODELBROKER_REDIS_URL does not parse as a Redis URL (redis://[[user]:password@]host[:port][/db]): "
            "percent-encode the special characters in the user name and password (/ as %2F, # as %23, ? as %3F, "
            "@ as %40)")

ADD = """
local value = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
"""

TAKE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[2]) > tonumber(ARGV[1]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then return tonumber(ARGV[3]) end
  return ttl
end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return -1
"""


@hookimpl(trylast=True)
def state_store(settings):
    if not getattr(settings, "redis_url", None):
        return None
    return RedisState(settings.redis_url)


def _redis():
    """redis-py, imported only when a Redis URL is set: importing it costs memory
    (docs/performance.md, 'Measurements behind the code')."""
    import redis.asyncio
    import redis.exceptions

    return redis.asyncio, redis.exceptions.RedisError


class RedisState:
    """``SharedState`` in Redis, with in-process state to fall back on during an outage."""

    def __init__(self, url: str, *, timeout_s: float = 0.25, prefix: str = PREFIX) -> None:
        self.url_shown = shown_url(url)
        if not url.startswith(tuple(f"{scheme}://" for scheme in SCHEMES)):
            raise ValueError("MODELBROKER_REDIS_URL must start with redis://, rediss:// or unix://")
        if self.url_shown == UNPARSED_URL:
            raise ValueError(UNPARSED)
        aioredis, self._redis_error = _redis()
        try:
            self.redis = aioredis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
            )
        except ValueError:  # redis-py's message may quote the part of the URL it could not read
            raise ValueError(UNPARSED) from None
        self.prefix = prefix
        self.local = MemoryState()
        self.degraded_since: float | None = None
        self.last_error: str | None = None
        self._probe: asyncio.Task | None = None
        self._add = self.redis.register_script(ADD)
        self._take = self.redis.register_script(TAKE)

    async def add(self, key: str, amount: float, ttl_s: float) -> float:
        return await self._either(
            lambda: self._add(keys=[self.prefix + key], args=[amount, int(ttl_s * 1000)]),
            lambda: self.local.add_now(key, amount, ttl_s), float,
        )

    async def get(self, key: str) -> float:
        async def remote() -> Any:
            return await self.redis.get(self.prefix + key) or 0

        return await self._either(remote, lambda: self.local.get(key), float)

    async def add_if_absent(self, key: str, amount: float, ttl_s: float) -> bool:
        return await self._either(
            lambda: self.redis.set(self.prefix + key, amount, px=int(ttl_s * 1000), nx=True),
            lambda: self.local.add_if_absent_now(key, amount, ttl_s), bool,
        )

    async def take(self, key: str, limit: float, window_s: float, amount: float = 1) -> float | None:
        window = int(time.time() // window_s)
        slot = f"{self.prefix}{key}:{window}"

        def answer(raw: Any) -> float | None:
            return None if int(raw) < 0 else int(raw) / 1000

        return await self._either(
            lambda: self._take(keys=[slot], args=[limit, amount, int(window_s * 1000)]),
            lambda: self.local.take_now(key, limit, window_s, amount), answer,
        )

    async def publish_cooldown(self, provider_id: str, until: float) -> None:
        await self.local.publish_cooldown(provider_id, until)
        await self._either(
            lambda: self.redis.zadd(self.prefix + "cooldowns", {provider_id: until}, gt=True),
            lambda: None, lambda _: None,
        )

    async def cooldowns(self) -> dict[str, float]:
        now = time.time()

        async def remote() -> Any:
            key = self.prefix + "cooldowns"
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.zrangebyscore(key, now, "+inf", withscores=True)
                _, rows = await pipe.execute()
            return rows

        def decode(rows: Any) -> dict[str, float]:
            if isinstance(rows, dict):
                return rows
            return {(m.decode() if isinstance(m, bytes) else m): float(s) for m, s in rows}

        return await self._either(remote, self.local.cooldowns, decode)

    def status(self) -> dict:
        shared = self.degraded_since is None
        row: dict = {"backend": "redis", "url": self.url_shown, "shared": shared}
        if not shared:
            row["degraded_since"] = self.degraded_since
            row["error"] = self.last_error
            row["note"] = "Redis is unreachable: limits, spend and cooldowns are local to this replica"
        return row

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self.redis.aclose()

    async def _either(self, remote: Callable[[], Awaitable[Any]], local: Callable[[], Any],
                      decode: Callable[[Any], T]) -> T:
        """Redis while it answers; local state (already in the result's shape) otherwise."""
        if self.degraded_since is None:
            try:
                return decode(await remote())
            except (self._redis_error, OSError) as exc:
                self._degrade(exc)
        result = local()
        return await result if asyncio.iscoroutine(result) else result  # MemoryState's async API

    def _degrade(self, exc: BaseException) -> None:
        self.degraded_since = time.time()
        self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        log.warning("Redis at %s is unreachable (%s); serving on local state until it is back",
                    self.url_shown, self.last_error)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._wait_for_redis())

    async def _wait_for_redis(self) -> None:
        while self.degraded_since is not None:
            await asyncio.sleep(PROBE_INTERVAL_S)
            try:
                await self.redis.ping()
            except (self._redis_error, OSError):
                continue
            log.warning("Redis at %s is back; sharing state again", self.url_shown)
            self.degraded_since = None


def shown_url(url: str) -> str:
    """``scheme://host:port/db`` from ``url``'s parsed parts; ``UNPARSED_URL`` if it parses more than one way."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
    except ValueError:
        return UNPARSED_URL
    if (parts.scheme not in SCHEMES or "#" in url or "@" in parts.path
            or any("@" in key or ("@" in value and key not in ("username", "password")) for key, value in query.items())):
        return UNPARSED_URL
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    db = query.get("db") or parts.path.strip("/")
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" + (f"/{db}" if re.fullmatch(r"[0-9]+", db) else "")
