"""One ledger record (a row of ``attempts``), from the core's record of an attempt.

A record is a plain dict with every column of ``attempts`` (but the key), so a
batch of them is one executemany. Making one is cheap: it runs on the event
loop, for every attempt.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from modelbroker import AttemptRecord

#: How an attempt ended, in the ``outcome`` column (``AttemptRecord.outcome``'s values).
OK, FAILED, PARTIAL, CANCELLED, REJECTED = "ok", "failed", "partial", "cancelled", "rejected"
OUTCOMES = (OK, FAILED, PARTIAL, CANCELLED, REJECTED)

#: Longest error text kept; the message holds no secret (adapters remove keys).
MAX_ERROR_CHARS = 500

Record = dict[str, Any]


def row_of(record: AttemptRecord) -> Record:
    """The ledger's row for the core's record of an attempt or a refusal: one dict literal."""
    return {
        "request_id": record.request_id, "attempt": record.attempt,
        "time": datetime.fromtimestamp(record.time, timezone.utc), "route": record.route,
        "client": record.client, "provider": record.provider, "provider_id": record.provider_id,
        "model": record.model, "model_used": record.model_used, "success": record.outcome == OK,
        "outcome": record.outcome, "error_kind": record.error_kind, "status": record.status,
        "error": _short(record.error), "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens, "total_tokens": record.total_tokens,
        "cached_tokens": record.cached_tokens, "reasoning_tokens": record.reasoning_tokens,
        "tokens_estimated": bool(record.tokens_estimated), "cost": float(record.cost),
        "latency_ms": _round(record.latency_ms), "overhead_ms": _round(record.overhead_ms),
        "request_uid": record.request_uid, "surface": record.surface, "cache_hit": bool(record.cache_hit),
        "saved_cost": float(record.saved_cost),
    }


def _blank(request_id: str, attempt: int) -> Record:
    return {
        "request_id": request_id, "attempt": attempt, "time": datetime.now(timezone.utc),
        "route": None, "client": None, "provider": None, "provider_id": None, "model": None,
        "model_used": None, "success": False, "outcome": FAILED, "error_kind": None, "status": None,
        "error": None, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
        "cached_tokens": None, "reasoning_tokens": None, "tokens_estimated": False, "cost": 0.0,
        "latency_ms": None, "overhead_ms": None, "request_uid": None, "surface": None, "cache_hit": False,
        "saved_cost": 0.0,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


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
