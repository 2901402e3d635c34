"""The response cache of one gateway: ``lookup`` answers from it, ``on_result`` fills it."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, defaultdict

from modelbroker import ChatRequest, GatewayConfig, ProviderConfig, Stored, hookimpl
from modelbroker.plugins.cache.entries import decode, encode
from modelbroker.plugins.cache.keys import BYPASS, HEADER, HIT, MISS, cache_key, cacheable, directives
from modelbroker.plugins.cache.settings import CacheSettings

log = logging.getLogger("modelbroker")

#: The name the cache is registered under in ``on_startup``.
CACHE_NAME = "cache.store"
#: Misses waiting for their answer to be kept; past this, the oldest are forgotten (their
#: requests failed, and on_result never came for them) and their answers are not kept.
PENDING_MAX = 10_000


class ResponseCache:
    """Exact-match answers, per client key unless ``shared``; ``store`` keeps the bytes."""

    def __init__(self, store) -> None:
        self.store = store
        #: request uid -> (key, settings) of each miss whose answer is to be kept, for on_result.
        self.pending: OrderedDict[str, tuple[str, CacheSettings]] = OrderedDict()
        self.hits: defaultdict[str, int] = defaultdict(int)  # by surface
        self.misses: defaultdict[str, int] = defaultdict(int)
        self.saved_cost = 0.0
        self.too_large = 0
        self._writing: set[asyncio.Task] = set()
        self._providers: tuple[GatewayConfig | None, dict[str, ProviderConfig]] = (None, {})

    @hookimpl
    def lookup(self, request, principal, headers, config):
        settings = config.plugins.settings_for("cache")
        if settings.ttl_s is None:
            return None  # turned off by a reload
        told = directives(headers.get("cache-control"))
        if "no-cache" in told or not cacheable(request, settings.cache_all):
            _tell(request, BYPASS)
            return None
        key = cache_key(request, principal, settings.shared)
        keep = settings if "no-store" not in told else None
        if not self.store.awaits:
            return self._found(request, key, config, keep, self.store.get(key))
        return self._find(request, key, config, keep)

    async def _find(self, request: ChatRequest, key: str, config: GatewayConfig,
                    keep: CacheSettings | None) -> Stored | None:
        return self._found(request, key, config, keep, await self.store.get(key))

    def _found(self, request: ChatRequest, key: str, config: GatewayConfig, keep: CacheSettings | None,
               data: bytes | None) -> Stored | None:
        """The kept answer in ``data``; on a miss, note the key for on_result unless ``keep`` is None."""
        stored = decode(data, self._providers_of(config)) if data is not None else None
        if stored is not None:
            _tell(request, HIT)
            self.hits[request.surface] += 1
            self.saved_cost += stored.completion.cost
            return stored
        _tell(request, MISS)
        self.misses[request.surface] += 1
        if keep is not None:
            self.pending[request.uid] = (key, keep)
            if len(self.pending) > PENDING_MAX:
                self.pending.popitem(last=False)
        return None

    @hookimpl
    def on_result(self, provider, request, result, chunks):
        pending = self.pending.pop(request.uid, None)
        if pending is None:
            return
        key, settings = pending
        data = encode(provider, result, chunks)
        if len(data) > settings.max_entry_bytes:
            self.too_large += 1
            return
        if not self.store.awaits:
            self.store.put(key, data, settings.ttl_s)
            return
        task = asyncio.get_running_loop().create_task(self.store.put(key, data, settings.ttl_s))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    @hookimpl
    async def on_shutdown(self):
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)
        await self.store.close()

    def stats(self) -> dict:
        """What /metrics reports: hits and misses by surface, bytes kept, cost saved."""
        return {"hits": dict(self.hits), "misses": dict(self.misses), "bytes": self.store.bytes,
                "saved_cost": self.saved_cost, "backend": self.store.name}

    def _providers_of(self, config: GatewayConfig) -> dict[str, ProviderConfig]:
        known, by_id = self._providers
        if known is not config:  # a reload: providers are looked up in the new file
            by_id = {p.id: p for p in config.providers}
            self._providers = (config, by_id)
        return by_id


def _tell(request: ChatRequest, status: str) -> None:
    if request.response_headers is None:
        request.response_headers = {HEADER: status}
    else:
        request.response_headers[HEADER] = status
