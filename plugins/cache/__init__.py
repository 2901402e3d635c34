"""Plugin ``cache``: an exact-match cache of successful answers (docs/cache.md).

Off unless providers.yaml sets ``plugins: cache: ttl_s:`` when the gateway starts: only
then is the cache registered, so a gateway without it pays nothing on any request. The
answers live in Redis when ``MODELBROKER_REDIS_URL`` is set, otherwise in the process.
"""

from __future__ import annotations

from modelbroker import hookimpl
from modelbroker.plugins.cache.cache import CACHE_NAME, ResponseCache
from modelbroker.plugins.cache.settings import CacheSettings
from modelbroker.plugins.cache.stores import MemoryStore, RedisStore

__all__ = ["CACHE_NAME", "CacheSettings", "ResponseCache", "on_startup", "register_settings"]


@hookimpl
def register_settings(register):
    register("cache", CacheSettings)


@hookimpl
def on_startup(pm, settings, config):
    options = config.plugins.settings_for("cache")
    if options.ttl_s is None:
        return
    redis_url = getattr(settings, "redis_url", None)
    store = RedisStore(redis_url) if redis_url else MemoryStore(options.max_bytes)
    pm.register(ResponseCache(store), name=CACHE_NAME)
