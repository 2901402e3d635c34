"""One attempt, or one refused request, as a flat record: built once by the core, handed to
every logger (app.log, the ledger, metrics each write it their own way).

A slotted dataclass rather than a dict: it is made for every attempt on the event loop,
and ``orjson`` serializes it as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from modelbroker._routing.types import ChatRequest, Completion, ErrorKind, ProviderError, Usage, unique_id

#: How an attempt ended (``AttemptRecord.outcome``).
OK, FAILED, PARTIAL, CANCELLED, REJECTED = "ok", "failed", "partial", "cancelled", "rejected"
OUTCOMES = (OK, FAILED, PARTIAL, CANCELLED, REJECTED)
_OUTCOME_OF_KIND = {ErrorKind.PARTIAL: PARTIAL, ErrorKind.CANCELLED: CANCELLED}


@dataclass(slots=True)
class AttemptRecord:
    """One attempt at one provider (``attempt`` 1, 2, ...) or a refused request (``attempt`` 0).

    ``time`` is when it ended, in seconds since the epoch. ``outcome`` is ``ok``,
    ``failed``, ``partial`` (a stream broken after content), ``cancelled`` (the client
    left) or ``rejected``. The provider fields are None for a refusal; the error fields
    None for a success. ``error`` holds no secret (adapters remove keys).
    """

    time: float
    request_id: str
    request_uid: str
    attempt: int
    route: str | None
    client: str | None
    provider: str | None
    provider_id: str | None
    model: str | None
    model_used: str | None
    outcome: str
    error_kind: str | None
    status: int | None
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int | None
    reasoning_tokens: int | None
    tokens_estimated: bool
    cost: float
    latency_ms: float | None
    overhead_ms: float | None
    #: The API the request came in through (``chat``, ``messages``, ...; ``ChatRequest.surface``).
    surface: str | None = None
    #: True for a request answered from a store (``lookup``) with no attempt: ``attempt`` 0,
    #: ``cost`` 0, and ``saved_cost`` what the stored answer cost when it was made.
    cache_hit: bool = False
    saved_cost: float = 0.0

    @property
    def success(self) -> bool:
        return self.outcome == OK


def result_record(provider, request: ChatRequest, result: Completion, elapsed_ms: float,
                  attempt: int) -> AttemptRecord:
    """The record of a successful attempt (positional: it is built for nearly every request)."""
    usage = result.usage or _NO_USAGE
    return AttemptRecord(
        time.time(), request.request_id, request.uid, attempt, request.route, request.client,
        provider.name, provider.id, provider.model, result.model, OK, None, None, None,
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cached_tokens,
        usage.reasoning_tokens, usage.estimated, result.cost, elapsed_ms, result.overhead_ms, request.surface,
    )


def failure_record(provider, request: ChatRequest, error: ProviderError, elapsed_ms: float,
                   attempt: int) -> AttemptRecord:
    usage = error.usage or _NO_USAGE
    return AttemptRecord(
        time.time(), request.request_id, request.uid, attempt, request.route, request.client,
        provider.name, provider.id, provider.model, None, _OUTCOME_OF_KIND.get(error.kind, FAILED),
        error.kind.value, error.status, error.message,
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cached_tokens,
        usage.reasoning_tokens, usage.estimated, error.cost, elapsed_ms, None, request.surface,
    )


def rejected_record(request: ChatRequest | None, request_id: str, route: str, status: int,
                    reason: str, surface: str | None = None) -> AttemptRecord:
    """A request refused before any attempt: attempt 0, no provider, no tokens, no cost."""
    if request is not None:
        surface = request.surface
    return AttemptRecord(
        time.time(), request_id, request.uid if request is not None else unique_id(), 0, route,
        request.client if request is not None else None, None, None, None, None, REJECTED, None, status,
        reason, 0, 0, 0, None, None, False, 0.0, None, None, surface,
    )


def stored_record(provider, request: ChatRequest, completion: Completion, elapsed_ms: float) -> AttemptRecord:
    """A request answered from a store: attempt 0, no tokens, no cost; the cost it saved."""
    return AttemptRecord(
        time.time(), request.request_id, request.uid, 0, request.route, request.client,
        provider.name, provider.id, provider.model, completion.model, OK, None, None, None,
        0, 0, 0, None, None, False, 0.0, elapsed_ms, elapsed_ms, request.surface, True, completion.cost,
    )


_NO_USAGE = Usage()


class AttemptReporter:
    """Tells every plugin how each attempt went (``on_result``, ``on_failure``) and of each
    refusal (``on_rejected``), with the record built once, and only if some plugin reads it."""

    def __init__(self, hooks) -> None:
        self.hooks = hooks
        self._result_records = hooks.wants("on_result", "record")
        self._failure_records = hooks.wants("on_failure", "record")
        self._rejected_records = hooks.wants("on_rejected", "record")
        #: Whether a streamed attempt keeps its chunks for ``on_result`` (some plugin reads them).
        self.keeps_chunks = hooks.wants("on_result", "chunks")

    def result(self, provider, request: ChatRequest, result: Completion, elapsed_ms: float, attempt: int,
               chunks: list | None = None) -> None:
        record = result_record(provider, request, result, elapsed_ms, attempt) if self._result_records else None
        self.hooks.notify("on_result", provider=provider, request=request, result=result, elapsed_ms=elapsed_ms,
                          attempt=attempt, record=record, chunks=chunks)

    def stored(self, provider, request: ChatRequest, stored, elapsed_ms: float) -> None:
        """A request answered from a store (``lookup``): ``on_stored_answer``, with its record."""
        record = stored_record(provider, request, stored.completion, elapsed_ms)
        self.hooks.notify("on_stored_answer", provider=provider, request=request, stored=stored, record=record)

    def failure(self, provider, request: ChatRequest, error: ProviderError, elapsed_ms: float, attempt: int) -> None:
        record = failure_record(provider, request, error, elapsed_ms, attempt) if self._failure_records else None
        self.hooks.notify("on_failure", provider=provider, request=request, error=error, elapsed_ms=elapsed_ms,
                          attempt=attempt, record=record)

    def rejected(self, request: ChatRequest | None, request_id: str, route: str, status: int, reason: str,
                 surface: str | None = None) -> None:
        record = (rejected_record(request, request_id, route, status, reason, surface)
                  if self._rejected_records else None)
        self.hooks.notify("on_rejected", request=request, request_id=request_id, route=route, status=status,
                          reason=reason, record=record)
