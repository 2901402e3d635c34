"""The providers.yaml of a chaos run, and the changed one a reload swaps in.

Three providers take faults (``a`` openai, ``b`` anthropic, ``c`` gemini: every built-in
adapter) and ``steady`` never does. They share one priority under ``balanced``, so each
takes a share of the traffic and is every other's fallback. The numbers that differ from
the defaults, and why:

* ``timeout_s: 3``: a hung provider costs an attempt 3 s, not 60;
* ``request_timeout_s: 30``: no request outlives the run by much;
* ``failure_threshold: 5``, ``cooldown_s: 2``, ``max_cooldown_s: 8``: a faulty provider
  keeps being tried during a fault (with the defaults, 3 failures would shelter it for
  30 s, longer than most faults last, and the faults would barely reach the routing);
* ``rpm`` and ``tpm`` on every provider, far above the load: never reached, but every
  attempt then counts in Redis, so a Redis restart or freeze is felt on the request path;
* ``max_attempts: 7``: with all three faulty at once, each tried twice (``retries: 1``),
  the seventh attempt still reaches ``steady``; with the default 5 a request could run out
  of attempts before the healthy provider, by configuration rather than by a bug.

The reloaded file adds ``spare`` (on ``steady``'s upstream, under a model of its own),
changes the weights and ``a``'s timeout, and gives ``b`` no retries.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from modelbroker.fake_upstream import FakeUpstream

#: provider name -> its adapter type; the fake upstream of ``spare`` is ``steady``'s.
FAULTY = {"a": "openai", "b": "anthropic", "c": "gemini"}
HEALTHY = "steady"
TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 30.0
MAX_ATTEMPTS = 7


def model_of(name: str) -> str:
    return f"chaos-{name}"


@functools.cache
def _formats() -> dict:
    """The fake upstream's wire formats, by provider type (finding them loads the plugins: once)."""
    return FakeUpstream().formats


def _provider(name: str, kind: str, url: str, **extra) -> dict:
    entry = {"name": name, "id": name, "type": kind, "endpoint": _formats()[kind].endpoint(url),
             "model": model_of(name), "priority": 1, "cost_per_1k_tokens": 0.001,
             "api_key": "chaos-key-not-secret", "timeout_s": TIMEOUT_S, "connect_timeout_s": 2.0,
             "rpm": 1_000_000, "tpm": 1_000_000_000}
    entry.update(extra)
    return entry


def providers_yaml(urls: dict[str, str], changed: bool = False) -> str:
    """The file for upstreams ``urls`` (provider name -> fake upstream URL); ``changed``: the reloaded one."""
    providers = [_provider(name, kind, urls[name]) for name, kind in FAULTY.items()]
    providers.append(_provider(HEALTHY, "openai", urls[HEALTHY]))
    if changed:
        providers[0].update(timeout_s=2.0, weight=2.0)
        providers[1].update(retries=0)
        providers.append(_provider("spare", "openai", urls[HEALTHY], weight=0.5))
    reliability = {"retries": 1, "max_attempts": MAX_ATTEMPTS, "request_timeout_s": REQUEST_TIMEOUT_S,
                   "failure_threshold": 5, "cooldown_s": 2.0, "max_cooldown_s": 8.0}
    config = {"strategy": "balanced", "reliability": reliability,
              "providers": providers}
    return "# Written by python -m bench.chaos.\n" + yaml.safe_dump(config, sort_keys=False)


def write(path: Path, urls: dict[str, str], changed: bool = False) -> None:
    """Replace ``path`` at once (a reload must never read half a file)."""
    partial = path.with_suffix(".tmp")
    partial.write_text(providers_yaml(urls, changed))
    partial.replace(path)
