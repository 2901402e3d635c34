"""The response cache's counts (plugins/cache), read from the cache when /metrics is scraped.

The cache keeps its own counts (hits and misses by surface, the bytes it holds, the cost
its hits saved); this collector reports them, so a gateway without the cache reports none.
In multiprocess mode they are not reported: a scrape reads the workers' files only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

#: The name the cache plugin registers its per-gateway cache under.
CACHE_NAME = "cache.store"


class CacheCollector:
    """A prometheus_client collector over ``stats()``: the cache's counts, or None without one."""

    def __init__(self, stats: Callable[[], dict | None]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        if stats is None:
            return
        for name, what in (("hits", "answered from the cache, with no upstream call"),
                           ("misses", "looked up in the cache and not found there (then routed)")):
            family = CounterMetricFamily(f"modelbroker_cache_{name}", f"Requests {what}, by surface.",
                                         labels=["surface"])
            for surface, count in sorted(stats[name].items(), key=lambda item: str(item[0])):
                family.add_metric([surface or ""], count)
            yield family
        yield GaugeMetricFamily("modelbroker_cache_bytes", "Bytes of answers in the cache (in this process's "
                                f"store; with Redis, those this process wrote). Backend: {stats['backend']}.",
                                value=stats["bytes"])
        yield CounterMetricFamily("modelbroker_cache_saved_cost", "What the answers served from the cache "
                                  "cost when they were made, in the currency of providers.yaml's prices.",
                                  value=stats["saved_cost"])


def cache_stats_of(pm) -> Callable[[], dict | None]:
    """``stats()`` of the cache registered in ``pm``, read at each scrape (None when it is off)."""

    def stats() -> dict | None:
        cache = pm.get_plugin(CACHE_NAME)
        return cache.stats() if cache is not None else None

    return stats
