"""One ledger record (a row of ``attempts``) from what a hook was told.

A record is a plain dict with every column of ``attempts`` (but the key), so a
batch of them is one executemany. Building one is cheap: it runs on the event
loop, for every attempt.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from modelbroker._routing.types import ErrorKind, unique_id

#: How an attempt ended, in the ``outcome`` column.
OK, FAILED, PARTIAL, CANCELLED, REJECTED = "ok", "failed", "partial", "cancelled", "rejected"
OUTCOMES = (OK, FAILED, PARTIAL, CANCELLED, REJECTED)
_OUTCOME_OF_KIND = {ErrorKind.PARTIAL: PARTIAL, ErrorKind.CANCELLED: CANCELLED}

#: Longest error text kept; the message holds no secret (adapters remove keys).
MAX_ERROR_CHARS = 500

Record = dict[str, Any]


def result_record(provider, request, result, elapsed_ms: float, attempt: int) -> Record:
    """The record of a successful attempt: one dict literal, since it is built for nearly every
    request (the blank-then-update way of the others cost twice as much)."""
    usage = result.usage
    return {
        "request_id": request.request_id, "attempt": attempt, "time": datetime.now(timezone.utc),
        "route": request.route, "client": request.client, "provider": provider.name,
        "provider_id": provider.id, "model": provider.model, "model_used": result.model,
        "success": True, "outcome": OK, "error_kind": None, "status": None, "error": None,
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "total_tokens": usage.total_tokens if usage else 0,
        "cached_tokens": usage.cached_tokens if usage else None,
        "reasoning_tokens": usage.reasoning_tokens if usage else None,
        "tokens_estimated": bool(usage.estimated) if usage else False, "cost": float(result.cost),
        "latency_ms": round(elapsed_ms, 3), "overhead_ms": round(result.overhead_ms, 3),
        "request_uid": request.uid,
    }


def failure_record(provider, request, error, elapsed_ms: float, attempt: int) -> Record:
    record = _attempt(provider, request, elapsed_ms, attempt)
    record.update(success=False, outcome=_OUTCOME_OF_KIND.get(error.kind, FAILED), error_kind=error.kind.value,
                  status=error.status, error=_short(error.message), cost=float(error.cost))
    _add_usage(record, error.usage)
    return record


def rejected_record(request, request_id: str, route: str, status: int, reason: str) -> Record:
    """A request refused before any attempt: attempt 0, no tokens, no cost."""
    record = _blank(request_id, 0)
    record.update(request_uid=getattr(request, "uid", None) or unique_id(), route=route,
                  client=getattr(request, "client", None), success=False, outcome=REJECTED,
                  status=status, error=_short(reason))
    return record


def _attempt(provider, request, elapsed_ms: float, attempt: int) -> Record:
    record = _blank(request.request_id, attempt)
    record.update(
        request_uid=request.uid, route=request.route,
        client=request.client, provider=provider.name, provider_id=provider.id, model=provider.model,
        latency_ms=round(elapsed_ms, 3),
    )
    return record


def _blank(request_id: str, attempt: int) -> Record:
    return {
        "request_id": request_id, "attempt": attempt, "time": datetime.now(timezone.utc),
        "route": None, "client": None, "provider": None, "provider_id": None, "model": None,
        "model_used": None, "success": False, "outcome": FAILED, "error_kind": None, "status": None,
        "error": None, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
        "cached_tokens": None, "reasoning_tokens": None, "tokens_estimated": False, "cost": 0.0,
        "latency_ms": None, "overhead_ms": None, "request_uid": None,
    }


def _add_usage(record: Record, usage) -> None:
    if usage is None:
        return
    record.update(
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens, cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens, tokens_estimated=bool(usage.estimated),
    )


def _short(message: str | None) -> str | None:
    if message is None or len(message) <= MAX_ERROR_CHARS:
        return message
    return message[: MAX_ERROR_CHARS - 1] + "…"


# --- the spill file's lines ------------------------------------------------------------


def to_line(record: Record) -> bytes:
    """One JSON line (``time`` as ISO 8601 with its offset)."""
    return orjson.dumps(record) + b"\n"


def from_line(line: bytes) -> Record:
    """The record of a spilled line; a column the line lacks gets its blank value."""
    data = orjson.loads(line)
    record = _blank(str(data["request_id"]), int(data["attempt"]))
    record.update((k, v) for k, v in data.items() if k in record)
    record["time"] = datetime.fromisoformat(data["time"])
    if record["request_uid"] is None:  # spilled before schema version 2: identified as the backfill does
        record["request_uid"] = record["request_id"]
    return record
