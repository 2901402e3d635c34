"""Strategy ``slo``: the cheapest provider that meets a latency and error-rate objective.

Bounds come from providers.yaml (validated by ``SLOSettings``; a reload applies them):

    plugins:
      slo:
        max_p95_ms: 2000       # recent p95 latency of successful requests
        max_error_rate: 0.05   # share of recent requests that failed
        min_samples: 5         # below this, a provider is given the benefit of the doubt

Providers within both bounds come first, cheapest first for this request;
the rest follow, best first (lowest error rate, then lowest p95), so a request
still has somewhere to go when no provider meets the objective.
"""

from pydantic import BaseModel, ConfigDict, Field

from modelbroker import estimated_cost, hookimpl

NAME = "slo"


class SLOSettings(BaseModel):
    """``plugins: slo:``."""

    model_config = ConfigDict(extra="forbid")

    max_p95_ms: float = Field(default=2000.0, gt=0)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    min_samples: int = Field(default=5, ge=0)


class CheapestWithinObjective:
    def select_provider(self, request, providers, health, config):
        bounds = config.plugins.settings_for(NAME)
        meeting, missing = [], []
        for provider in providers:
            (meeting if meets(provider, health, bounds) else missing).append(provider)
        meeting.sort(key=lambda p: (estimated_cost(p, request), p.priority))
        missing.sort(key=lambda p: (health.error_rate(p) or 0.0, health.p95_ms(p) or 0.0, p.priority))
        return meeting + missing


def meets(provider, health, bounds: SLOSettings) -> bool:
    if health.samples(provider) < bounds.min_samples:
        return True
    error_rate = health.error_rate(provider) or 0.0
    p95 = health.p95_ms(provider)
    return error_rate <= bounds.max_error_rate and (p95 is None or p95 <= bounds.max_p95_ms)


@hookimpl
def register_settings(register):
    register(NAME, SLOSettings)


@hookimpl
def register_strategies(register):
    register(NAME, CheapestWithinObjective)
