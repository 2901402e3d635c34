"""Plugin ``metrics``: Prometheus metrics at ``GET /metrics``.

Requests, attempts, latency, the gateway's overhead, tokens and cost are counted
by the hooks; provider health is read from the gateway's tracker when scraped.
Each gateway has its own registry. With ``PROMETHEUS_MULTIPROC_DIR`` set (several
worker processes), every worker writes its values to that directory and any
worker's /metrics adds them all up. docs/observability.md lists every metric.
"""

from __future__ import annotations

import os

from prometheus_client import values

from modelbroker import ConfigError, hookimpl
from modelbroker.plugins.metrics.cache import CacheCollector, cache_stats_of
from modelbroker.plugins.metrics.recorder import MetricsRecorder
from modelbroker.plugins.metrics.routes import RECORDER_NAME

__all__ = ["RECORDER_NAME", "MetricsRecorder", "api_routes", "on_startup"]

MULTIPROC_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


@hookimpl
def on_startup(pm, config, health):
    """Register this gateway's recorder."""
    recorder = MetricsRecorder(config, multiprocess_dir=multiprocess_dir())
    if not recorder.multiprocess_dir:
        recorder.registry.register(CacheCollector(cache_stats_of(pm)))
    pm.register(recorder, name=RECORDER_NAME)
    return recorder.start(health)


@hookimpl
def api_routes():
    from modelbroker.plugins.metrics.routes import router

    return [router]


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR``, checked; None when unset (one process)."""
    name = next((n for n in MULTIPROC_VARIABLES if n in os.environ), None)
    if name is None:
        return None
    path = os.environ[name]
    if values.ValueClass is values.MutexValue:
        raise ConfigError(f"{name} was set after prometheus_client was imported; set it before the gateway starts")
    if not os.path.isdir(path):
        raise ConfigError(f"{name}={path!r} is not a directory; create it (empty) before starting the workers")
    return path
