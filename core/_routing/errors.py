"""What can stop a request: a plugin's refusal (``APIError``) and the router's own outcomes.

``_server/errors.py`` turns each into the HTTP error shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class APIError(Exception):
    """Raise from a route to answer with the error shape."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None,
        param: str | None = None, headers: dict[str, str] | None = None, type: str | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers
        #: The error's ``type`` in the answer; None: the usual one for ``status``.
        self.type = type
        self.details = details


@dataclass(slots=True)
class AttemptSummary:
    """One attempt as the client is told about it (never with a secret)."""

    provider: str
    model: str
    ok: bool
    elapsed_ms: float
    kind: str | None = None
    status: int | None = None
    message: str | None = None
    code: str | None = None
    #: The upstream's own message, type and param, and whether the request itself was at
    #: fault (a 400, 413 or 422, or a prompt too long), for the answer when all attempts were.
    detail: str | None = None
    error_type: str | None = None
    param: str | None = None
    request_fault: bool = False

    def public(self) -> dict:
        return {k: v for k, v in (
            ("provider", self.provider), ("model", self.model), ("ok", self.ok),
            ("error", self.kind), ("status", self.status), ("code", self.code), ("message", self.message),
            ("elapsed_ms", round(self.elapsed_ms, 1)),
        ) if v is not None}


class NoProviderAvailable(Exception):
    """No provider can take the request at all (none configured, all disabled, none matches)."""


class AllProvidersBusy(Exception):
    """Every provider that could take the request is at its own limit (concurrency, rpm, tpm)."""


class UnknownStrategy(Exception):
    """No installed strategy plugin answered for the strategy name."""


class AllProvidersFailed(Exception):
    """Every option was tried and failed (or the deadline passed): nothing is left to retry."""

    def __init__(self, attempts: list[AttemptSummary], *, deadline: bool = False,
                 retry_after: float | None = None) -> None:
        what = "the request deadline passed" if deadline else f"all {len(attempts)} attempts failed"
        super().__init__(what)
        self.attempts = attempts
        self.deadline = deadline
        #: Set when every attempt was refused for rate limits: the soonest a retry may work.
        self.retry_after = retry_after


class UnknownModel(Exception):
    """The request's ``model`` names no provider, model or strategy."""

    def __init__(self, model: str, available: list[str]) -> None:
        super().__init__(model)
        self.model = model
        self.available = available
