"""The retry and cooldown policy: what a failed attempt says about the provider and the request.

Read from an error's kind, HTTP status and code, as the adapters set them; never from
its wording (an adapter that knows its vendor's wording sets the code, see
``_upstream/errors.py`` and the built-in adapters). ``ReliabilityConfig`` holds the
numbers; docs/reliability.md explains each rule. The router decides with these whether
to retry, fall back or stop; the health tracker whether the provider cools down.
"""

from __future__ import annotations

import random

from modelbroker._config.providers import ReliabilityConfig
from modelbroker._routing.types import ErrorKind, ProviderError

#: Failures worth trying again on the same provider.
TRANSIENT_KINDS = frozenset({ErrorKind.TIMEOUT, ErrorKind.CONNECT, ErrorKind.CONNECTION})
TRANSIENT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
#: Statuses that say the provider cannot serve anyone until someone acts: cool down at once.
COOL_AT_ONCE = frozenset({401, 403, 404})
#: Statuses that are the request's fault, not the provider's: they do not count as failures.
CLIENT_FAULT = frozenset({400, 413, 422})
#: Codes of an account out of credit (with one of QUOTA_STATUSES): waiting will not help.
QUOTA_CODES = frozenset({"insufficient_quota", "quota_exceeded", "billing_hard_limit_reached"})
QUOTA_STATUSES = frozenset({400, 402, 403, 429})
#: Codes of a prompt that does not fit the model's context window.
CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
#: Codes that put a 400 on the provider's side, not the request's: a key the upstream does not
#: take (Gemini answers a bad key with 400), an account or region the API is not open to.
PROVIDER_SIDE_CODES = frozenset({"invalid_api_key", "FAILED_PRECONDITION"})


def quota_exhausted(error: ProviderError) -> bool:
    """The account is out of credit: not retried, and the provider cools down at once."""
    return error.status in QUOTA_STATUSES and error.code in QUOTA_CODES


def context_too_long(error: ProviderError) -> bool:
    """The prompt does not fit: only a provider with a larger context window may take it."""
    return error.code in CONTEXT_CODES


def is_transient(error: ProviderError) -> bool:
    """Worth trying again on the same provider (after a backoff)."""
    if error.kind in TRANSIENT_KINDS:
        return True
    return error.kind == ErrorKind.STATUS and error.status in TRANSIENT_STATUSES and not quota_exhausted(error)


def falls_back_first(error: ProviderError) -> bool:
    """A timeout or a connection that failed: the provider may be hung or unreachable, so
    another provider is tried at once; this one again only when no other can take the request."""
    return error.kind in TRANSIENT_KINDS


def rate_limited(error: ProviderError) -> bool:
    """A 429 that waiting will cure (unlike an exhausted quota)."""
    return error.status == 429 and not quota_exhausted(error)


def is_request_fault(error: ProviderError) -> bool:
    """The request's fault, not the provider's: the failure does not count against it."""
    return ((error.status in CLIENT_FAULT or context_too_long(error)) and not quota_exhausted(error)
            and error.code not in PROVIDER_SIDE_CODES)


def cools_at_once(error: ProviderError) -> bool:
    """A failure after which the provider cools down without waiting for the threshold."""
    return error.status in COOL_AT_ONCE or quota_exhausted(error) or error.code in PROVIDER_SIDE_CODES or (
        error.status == 429 and error.retry_after is not None)


def backoff_s(policy: ReliabilityConfig, retry: int) -> float:
    """The pause before retry number ``retry`` (1, 2, ...): doubling from
    ``backoff_initial_s``, capped at ``backoff_max_s``, less up to half at random."""
    pause = min(policy.backoff_max_s, policy.backoff_initial_s * 2 ** (retry - 1))
    return pause * random.uniform(0.5, 1.0)


def cooldown_s(policy: ReliabilityConfig, cooldowns: int, error: ProviderError) -> float:
    """How long cooldown number ``cooldowns`` (1, 2, ...) lasts: doubling from ``cooldown_s``,
    capped at ``max_cooldown_s``, and at least the upstream's Retry-After (capped too)."""
    duration = min(policy.max_cooldown_s, policy.cooldown_s * 2 ** (max(1, cooldowns) - 1))
    if error.retry_after is not None:
        duration = max(duration, min(error.retry_after, policy.max_cooldown_s))
    return duration
