"""Sums over the ledger for ``GET /usage`` and ``modelbroker usage``.

For a time window, in total and per group (provider, model, day or client):
requests (distinct request ids), attempts, failures (failed attempts), rejected
requests, tokens, cost, and the p50 and p95 latency of the successful attempts.
Percentiles are nearest-rank (the smallest latency with at least p% of the group
at or below it), computed in SQL with window functions, so the same query runs
on SQLite and PostgreSQL and no latency leaves the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from plugins.ledger.schema import attempts

GROUPS = ("provider", "model", "day", "client")
DEFAULT_DAYS = 30
PERCENTILES = {"p50_latency_ms": 0.50, "p95_latency_ms": 0.95}
COUNTS = ("requests", "attempts", "failures", "rejected", "prompt_tokens", "completion_tokens", "total_tokens")


class UsageQueryError(ValueError):
    """A bad ``from``, ``to`` or ``group_by``; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Window:
    """From ``start`` (included) to ``end`` (excluded), both aware, in UTC."""

    start: datetime
    end: datetime


def parse_window(start: str | None, end: str | None, now: datetime | None = None) -> Window:
    """``from`` and ``to`` as ISO dates or datetimes; by default the last 30 days.

    A date alone means midnight UTC; for ``to`` it means the end of that day, so
    ``from=2025-01-01&to=2025-01-31`` is the whole of January. A datetime without
    an offset is taken as UTC.
    """
    now = now or datetime.now(timezone.utc)
    to = _parse_time("to", end, end_of_day=True) if end else now
    since = _parse_time("from", start, end_of_day=False) if start else to - timedelta(days=DEFAULT_DAYS)
    if since >= to:
        raise UsageQueryError("from", f"from ({since.isoformat()}) must be before to ({to.isoformat()})")
    return Window(since, to)


def parse_group_by(value: str | None) -> str | None:
    """One of GROUPS, two of them joined by a comma (``day,provider``: a breakdown by both,
    each group's key a ``[day, provider]`` list), or None (also ``none`` or empty): totals only."""
    if value is None or value.strip().lower() in ("", "none"):
        return None
    names = [name.strip() for name in value.split(",")]
    if len(names) > 2 or len(set(names)) != len(names) or any(name not in GROUPS for name in names):
        raise UsageQueryError(
            "group_by", f"group_by must be one of {', '.join(GROUPS)} or none, or two of them "
            f"joined by a comma (day,provider), not {value!r}",
        )
    return ",".join(names)


def _parse_time(param: str, value: str, *, end_of_day: bool) -> datetime:
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
            return moment + timedelta(days=1) if end_of_day else moment
        moment = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        raise UsageQueryError(
            param, f"{param} must be an ISO date (2025-01-31) or datetime (2025-01-31T12:00:00Z), not {value!r}"
        ) from None
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


async def usage_report(engine: AsyncEngine, window: Window, group_by: str | None) -> dict[str, Any]:
    """The /usage answer: ``{"from", "to", "group_by", "totals", "groups": [{"key", ...}]}``."""
    async with engine.connect() as conn:
        totals = await _summaries(conn, window, None)
        groups = await _summaries(conn, window, group_by) if group_by else []
    if group_by and "," in group_by:
        for group in groups:
            group["key"] = [part or None for part in group["key"].split(KEY_SEPARATOR)]
    return {
        "from": window.start.isoformat(),
        "to": window.end.isoformat(),
        "group_by": group_by,
        "totals": _without_key(totals[0]) if totals else _empty(),
        "groups": sorted(groups, key=lambda g: (g["key"] is None, str(g["key"]))),
    }


async def _summaries(conn, window: Window, group_by: str | None) -> list[dict[str, Any]]:
    rows = _rows_in(window, _group_key(group_by, conn.dialect.name)).subquery("rows")
    sums = {row.key: _summary(row) for row in await conn.execute(_sums(rows))}
    for row in await conn.execute(_percentiles(rows)):
        if row.key in sums:
            sums[row.key].update((name, _number(getattr(row, name))) for name in PERCENTILES)
    return list(sums.values())


#: Joins the parts of a two-column group key inside SQL; never in a day, name or model.
KEY_SEPARATOR = "\x1f"


def _group_key(group_by: str | None, dialect: str) -> sa.ColumnElement:
    """The value rows are grouped by: a constant for the totals, a UTC date for ``day``,
    two columns joined by KEY_SEPARATOR for ``day,provider`` and the like."""
    if group_by is None:
        return sa.literal_column("'total'", sa.Text)
    if "," in group_by:
        first, second = (sa.func.coalesce(_column(name, dialect), "") for name in group_by.split(","))
        return sa.cast(first, sa.Text) + sa.literal(KEY_SEPARATOR, sa.Text) + sa.cast(second, sa.Text)
    return _column(group_by, dialect)


def _column(name: str, dialect: str) -> sa.ColumnElement:
    if name == "day":
        if dialect == "postgresql":
            return sa.func.to_char(sa.func.timezone("UTC", attempts.c.time), "YYYY-MM-DD")
        return sa.func.strftime("%Y-%m-%d", attempts.c.time)
    return attempts.c[name]


def _rows_in(window: Window, key: sa.ColumnElement) -> sa.Select:
    c = attempts.c
    return sa.select(
        key.label("key"), c.request_id, c.attempt, c.success, c.outcome, c.prompt_tokens,
        c.completion_tokens, c.total_tokens, c.cost, c.latency_ms,
    ).where(c.time >= window.start, c.time < window.end)


def _sums(rows) -> sa.Select:
    attempt = rows.c.attempt > 0

    def count_if(condition) -> sa.ColumnElement:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    return sa.select(
        rows.c.key,
        sa.func.count(sa.distinct(rows.c.request_id)).label("requests"),
        count_if(attempt).label("attempts"),
        count_if(sa.and_(attempt, sa.not_(rows.c.success))).label("failures"),
        count_if(rows.c.outcome == "rejected").label("rejected"),
        *(sa.func.coalesce(sa.func.sum(rows.c[name]), 0).label(name)
          for name in ("prompt_tokens", "completion_tokens", "total_tokens")),
        sa.func.coalesce(sa.func.sum(rows.c.cost), 0.0).label("cost"),
    ).group_by(rows.c.key)


def _percentiles(rows) -> sa.Select:
    """Per key, the nearest-rank percentiles of the successful attempts' latency."""
    ranked = sa.select(
        rows.c.key, rows.c.latency_ms,
        sa.func.row_number().over(partition_by=rows.c.key, order_by=rows.c.latency_ms).label("rank"),
        sa.func.count().over(partition_by=rows.c.key).label("n"),
    ).where(rows.c.success, rows.c.latency_ms.is_not(None)).subquery("ranked")
    return sa.select(
        ranked.c.key,
        *(sa.func.min(sa.case((ranked.c.rank >= ranked.c.n * sa.literal_column(repr(p)), ranked.c.latency_ms)))
          .label(name) for name, p in PERCENTILES.items()),
    ).group_by(ranked.c.key)


def _summary(row) -> dict[str, Any]:
    summary: dict[str, Any] = {"key": row.key}
    summary.update((name, int(getattr(row, name))) for name in COUNTS)
    summary["cost"] = float(row.cost)
    summary.update((name, None) for name in PERCENTILES)
    return summary


def _empty() -> dict[str, Any]:
    return {**dict.fromkeys(COUNTS, 0), "cost": 0.0, **dict.fromkeys(PERCENTILES)}


def _without_key(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "key"}


def _number(value) -> float | None:
    return None if value is None else float(value)
