"""Sums over the ledger for ``GET /usage`` and ``modelbroker usage``.

For a time window, in total and per group (provider, model, day or client):
requests (distinct requests: the gateway's own id, so a client's reused x-request-id
still counts twice), attempts, failures (failed attempts), rejected
requests, cache hits (requests answered from the response cache, with no attempt),
tokens, cost, the cost the cache hits saved, and the p50 and p95 latency of the
successful attempts.
Percentiles are nearest-rank (the smallest latency with at least p% of the group
at or below it), computed in SQL with window functions, so the same query runs
on SQLite and PostgreSQL and no latency leaves the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from modelbroker.plugins.storage.database import Connection, Database

GROUPS = ("provider", "model", "day", "client")
DEFAULT_DAYS = 30
PERCENTILES = {"p50_latency_ms": 0.50, "p95_latency_ms": 0.95}
COUNTS = ("requests", "attempts", "failures", "rejected", "cache_hits", "prompt_tokens", "completion_tokens",
          "total_tokens")
SUMS_OF_COST = ("cost", "saved_cost")


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
    try:
        since = _parse_time("from", start, end_of_day=False) if start else to - timedelta(days=DEFAULT_DAYS)
    except OverflowError:  # 30 days before a 'to' in the year 1
        raise UsageQueryError("from", "from would be before the year 1 (30 days before to); give from") from None
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
    except OverflowError:  # the day after 9999-12-31
        raise UsageQueryError(param, f"{param} is past the last date there is: {value!r}") from None
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


async def usage_report(db: Database, window: Window, group_by: str | None,
                       client: str | None = None) -> dict[str, Any]:
    """The /usage answer: ``{"from", "to", "group_by", "client", "totals", "groups": [{"key", ...}]}``;
    with ``client``, only that client's rows are counted (a client key reads its own usage)."""
    async with db.reading() as conn:
        totals = await _summaries(conn, window, None, client)
        groups = await _summaries(conn, window, group_by, client) if group_by else []
    if group_by and "," in group_by:
        for group in groups:
            group["key"] = [part or None for part in group["key"].split(KEY_SEPARATOR)]
    return {
        "from": window.start.isoformat(),
        "to": window.end.isoformat(),
        "group_by": group_by,
        "client": client,
        "totals": _without_key(totals[0]) if totals else _empty(),
        "groups": sorted(groups, key=lambda g: (g["key"] is None, str(g["key"]))),
    }


async def _summaries(conn: Connection, window: Window, group_by: str | None,
                     client: str | None) -> list[dict[str, Any]]:
    windowed = _windowed(_group_key(group_by, conn.dialect), client is not None)
    params = (window.start, window.end) if client is None else (window.start, window.end, client)
    sums = {row["key"]: _summary(row) for row in await conn.fetch(windowed + SUMS, params)}
    for row in await conn.fetch(windowed + PERCENTILE_QUERY, params):
        if row["key"] in sums:
            sums[row["key"]].update((name, _number(row[name])) for name in PERCENTILES)
    return list(sums.values())


#: Joins the parts of a two-column group key inside SQL; never in a day, name or model.
KEY_SEPARATOR = "\x1f"

#: The UTC day of ``time`` as YYYY-MM-DD (SQLite holds UTC text; PostgreSQL a timestamptz).
DAY = {"sqlite": "strftime('%Y-%m-%d', time)", "postgresql": "to_char(timezone('UTC', time), 'YYYY-MM-DD')"}


def _group_key(group_by: str | None, dialect: str) -> str:
    """The SQL expression rows are grouped by: a constant for the totals, a UTC date for
    ``day``, two columns joined by KEY_SEPARATOR for ``day,provider`` and the like."""
    if group_by is None:
        return "'total'"
    if "," in group_by:
        first, second = (f"CAST(coalesce({_column(name, dialect)}, '') AS TEXT)" for name in group_by.split(","))
        return f"{first} || '{KEY_SEPARATOR}' || {second}"
    return _column(group_by, dialect)


def _column(name: str, dialect: str) -> str:
    if name not in GROUPS:  # parse_group_by already refused it; never let a name into SQL unchecked
        raise UsageQueryError("group_by", f"cannot group by {name!r}")
    return DAY[dialect] if name == "day" else name


def _windowed(key: str, one_client: bool = False) -> str:
    """The attempts in the window (``time >= ? AND time < ?``, and ``client = ?`` for
    ``one_client``) with their group key, as ``windowed``."""
    return (
        f"WITH windowed AS (SELECT {key} AS key, request_id, request_uid, attempt, success, outcome, prompt_tokens, "
        "completion_tokens, total_tokens, cost, latency_ms, cache_hit, saved_cost FROM attempts WHERE time >= ? AND time < ?"
        + (" AND client = ?) " if one_client else ") ")
    )


SUMS = (
    "SELECT key, count(DISTINCT coalesce(request_uid, request_id)) AS requests, "
    "coalesce(sum(CASE WHEN attempt > 0 THEN 1 ELSE 0 END), 0) AS attempts, "
    "coalesce(sum(CASE WHEN attempt > 0 AND NOT success THEN 1 ELSE 0 END), 0) AS failures, "
    "coalesce(sum(CASE WHEN outcome = 'rejected' THEN 1 ELSE 0 END), 0) AS rejected, "
    "coalesce(sum(CASE WHEN cache_hit THEN 1 ELSE 0 END), 0) AS cache_hits, "
    "coalesce(sum(prompt_tokens), 0) AS prompt_tokens, "
    "coalesce(sum(completion_tokens), 0) AS completion_tokens, "
    "coalesce(sum(total_tokens), 0) AS total_tokens, "
    "coalesce(sum(cost), 0.0) AS cost, "
    "coalesce(sum(saved_cost), 0.0) AS saved_cost "
    "FROM windowed GROUP BY key"
)

#: Per key, the nearest-rank percentiles of the successful attempts' latency (a cache hit is none).
PERCENTILE_QUERY = (
    ", ranked AS (SELECT key, latency_ms, "
    "row_number() OVER (PARTITION BY key ORDER BY latency_ms) AS position, "
    "count(*) OVER (PARTITION BY key) AS n "
    "FROM windowed WHERE success AND attempt > 0 AND latency_ms IS NOT NULL) "
    "SELECT key, "
    + ", ".join(f"min(CASE WHEN position >= n * {p!r} THEN latency_ms END) AS {name}"
                for name, p in PERCENTILES.items())
    + " FROM ranked GROUP BY key"
)


def _summary(row) -> dict[str, Any]:
    summary: dict[str, Any] = {"key": row["key"]}
    summary.update((name, int(row[name])) for name in COUNTS)
    summary.update((name, float(row[name])) for name in SUMS_OF_COST)
    summary.update((name, None) for name in PERCENTILES)
    return summary


def _empty() -> dict[str, Any]:
    return {**dict.fromkeys(COUNTS, 0), **dict.fromkeys(SUMS_OF_COST, 0.0), **dict.fromkeys(PERCENTILES)}


def _without_key(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "key"}


def _number(value) -> float | None:
    return None if value is None else float(value)
