"""Strategy ``latency``: fastest first, by each provider's moving-average latency.

Providers not tried yet come first, so every provider gets tried and measured;
among them, the configured priority decides. Providers that were tried but never
answered (every attempt failed) come last.
"""

from modelbroker import hookimpl


class Fastest:
    def select_provider(self, providers, health):
        def key(provider):
            latency = health.latency_ms(provider)
            if latency is not None:
                return (1, latency, provider.priority)
            # Never answered: untried comes first; tried and only ever failed comes last.
            return (0 if health.samples(provider) == 0 else 2, 0.0, provider.priority)

        return sorted(providers, key=key)


@hookimpl
def register_strategies(register):
    register("latency", Fastest)
