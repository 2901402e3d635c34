"""An in-memory stand-in for the ledger plugin's ``GET /usage``, for the dashboard tests.

It hears every attempt through the hooks, as plugins/ledger does, and answers in the
ledger's shape (plugins/ledger/queries.py): ``from`` and ``to`` as dates (``to``
included), groups by ``day`` or ``provider``. With ``by_day_and_provider`` it also
answers ``group_by=day,provider`` (``key`` = ``[day, provider]``), the breakdown the
dashboard asks for; without, it refuses it with 400, as the ledger does today. With
``held``, /usage answers only once ``release()`` is called (a slow ledger).
"""

from __future__ import annotations

import asyncio
import math
import threading
from datetime import date, datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Query

from modelbroker._routing.errors import APIError
from modelbroker.hookspecs import hookimpl

Row = dict[str, Any]


def today() -> date:
    return datetime.now(timezone.utc).date()


def row(day: date, request_id: str, attempt: int, provider: str | None, *, success: bool, cost: float = 0.0,
        prompt: int = 0, completion: int = 0, latency_ms: float | None = None) -> Row:
    return {"day": day.isoformat(), "request_id": request_id, "attempt": attempt, "provider": provider,
            "success": success, "cost": cost, "prompt_tokens": prompt, "completion_tokens": completion,
            "latency_ms": latency_ms}


def history(days: int = 6) -> list[Row]:
    """A week-like past for providers ``fast``, ``backup`` and ``broken`` (before today)."""
    rows = []
    for back in range(days, 0, -1):
        day = today() - timedelta(days=back)
        for n in range(12 + 3 * (back % 4)):
            rows.append(row(day, f"f{back}-{n}", 1, "fast", success=True, cost=0.004 + 0.001 * (n % 3),
                            prompt=40, completion=80, latency_ms=300 + 40 * (n % 7)))
        for n in range(4 + back % 3):
            rows.append(row(day, f"b{back}-{n}", 1, "broken", success=False, latency_ms=90))
            rows.append(row(day, f"b{back}-{n}", 2, "backup", success=True, cost=0.012,
                            prompt=40, completion=120, latency_ms=900 + 150 * n))
    return rows


class StubLedger:
    def __init__(self, *, by_day_and_provider: bool = True, rows: list[Row] | None = None, held: bool = False) -> None:
        self.by_day_and_provider = by_day_and_provider
        self.rows = list(rows or [])
        self.released = threading.Event()
        if not held:
            self.released.set()

    def release(self) -> None:
        self.released.set()

    @hookimpl
    def on_result(self, provider, request, result, elapsed_ms, attempt):
        self.rows.append(row(today(), request.request_id, attempt, provider.name, success=True, cost=result.cost,
                             prompt=result.usage.prompt_tokens, completion=result.usage.completion_tokens,
                             latency_ms=elapsed_ms))

    @hookimpl
    def on_failure(self, provider, request, error, elapsed_ms, attempt):
        self.rows.append(row(today(), request.request_id, attempt, provider.name, success=False,
                             latency_ms=elapsed_ms))

    @hookimpl
    def on_rejected(self, request_id):
        self.rows.append(row(today(), request_id, 0, None, success=False))

    @hookimpl
    def api_routes(self):
        router = APIRouter()

        @router.get("/usage")
        async def usage(start: str = Query(alias="from"), to: str = Query(), group_by: str | None = None):
            await asyncio.to_thread(self.released.wait, 30)
            keys = {"day": ("day",), "provider": ("provider",), None: ()}
            if self.by_day_and_provider:
                keys["day,provider"] = ("day", "provider")
            if group_by not in keys:
                raise APIError(400, f"group_by must be day or provider, not {group_by!r}", code="invalid_parameter")
            rows = [r for r in self.rows if start <= r["day"] <= to]
            groups: dict[Any, list[Row]] = {}
            for r in rows:
                key = [r[k] for k in keys[group_by]]
                groups.setdefault(key[0] if len(key) == 1 else tuple(key), []).append(r)
            return {"from": start, "to": to, "group_by": group_by, "totals": summary(rows),
                    "groups": [{"key": list(k) if isinstance(k, tuple) else k, **summary(g)}
                               for k, g in sorted(groups.items(), key=lambda item: str(item[0]))]}

        return [router]


def summary(rows: list[Row]) -> dict[str, Any]:
    attempts = [r for r in rows if r["attempt"] > 0]
    latencies = sorted(r["latency_ms"] for r in attempts if r["success"])
    prompt, completion = sum(r["prompt_tokens"] for r in rows), sum(r["completion_tokens"] for r in rows)
    return {
        "requests": len({r["request_id"] for r in rows}), "attempts": len(attempts),
        "failures": sum(not r["success"] for r in attempts), "rejected": sum(r["attempt"] == 0 for r in rows),
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "cost": sum(r["cost"] for r in rows),
        "p50_latency_ms": _rank(latencies, 0.50), "p95_latency_ms": _rank(latencies, 0.95),
    }


def _rank(values: list[float], p: float) -> float | None:
    return values[max(0, math.ceil(p * len(values)) - 1)] if values else None
