"""Strategy ``latency``: fastest first, by each provider's moving-average latency.

Providers with no measurement yet come first, so every provider gets tried
and measured; among them, the configured priority decides.
"""

from core.hookspecs import hookimpl

NAME = "latency"


@hookimpl(trylast=True)
def strategy_names():
    return [NAME]


@hookimpl(trylast=True)
def select_provider(providers, strategy, health):
    if strategy != NAME:
        return None

    def key(provider):
        latency = health.latency_ms(provider)
        return (latency is not None, latency or 0.0, provider.priority)

    return sorted(providers, key=key)
