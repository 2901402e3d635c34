"""``modelbroker usage``: the /usage report as a text table, read from the database directly."""

from __future__ import annotations

import asyncio
from typing import Any

from modelbroker import format_table as table
from modelbroker.plugins.ledger.options import LedgerOptions
from modelbroker.plugins.ledger.queries import UsageQueryError, Window, parse_group_by, parse_window, usage_report
from modelbroker.plugins.ledger.schema import current_version
from modelbroker.plugins.storage.database import (
    DatabaseError,
    DatabaseURLError,
    UnsupportedDatabase,
    describe,
    open_database,
)
from modelbroker.plugins.storage.location import sqlite_path
from modelbroker.plugins.storage.urls import safe_url

HEADER = ["requests", "attempts", "failures", "rejected", "cache hits", "tokens in", "tokens out", "cost", "saved",
          "p50 ms", "p95 ms"]


class LedgerUnavailable(Exception):
    """The ledger database is missing, empty or cannot be read."""


#: What ``modelbroker usage`` reports to the user (message on stderr, exit status 2).
UsageError = (UsageQueryError, LedgerUnavailable)


def print_usage(settings, from_: str | None, to: str | None, group_by: str | None) -> str:
    """The usage report for ``settings``' database as text. Raises one of ``UsageError``."""
    window = parse_window(from_, to)
    group = parse_group_by(group_by)
    options = LedgerOptions.from_settings(settings)
    path = sqlite_path(options.database_url)
    if path is not None and not path.exists():
        raise LedgerUnavailable(f"no ledger at {path}: start the gateway once, or set MODELBROKER_DATABASE_URL")
    return format_report(asyncio.run(_read(options.database_url, window, group)))


async def _read(url: str, window: Window, group_by: str | None) -> dict[str, Any]:
    try:
        db = open_database(url)
    except UnsupportedDatabase as exc:
        raise LedgerUnavailable(str(exc)) from None
    try:
        if await current_version(db) == 0:
            raise LedgerUnavailable(f"the database {safe_url(url)} holds no ledger yet: start the gateway once")
        return await usage_report(db, window, group_by)
    except DatabaseURLError as exc:
        raise LedgerUnavailable(str(exc)) from None
    except (DatabaseError, OSError, asyncio.TimeoutError) as exc:
        raise LedgerUnavailable(f"cannot read the ledger at {safe_url(url)}: {describe(exc)}") from None
    finally:
        await db.close()


def format_report(report: dict[str, Any]) -> str:
    """A title line, then one row per group and a total row."""
    group_by = report["group_by"]
    title = f"Usage from {report['from']} to {report['to']}" + (f", by {group_by}" if group_by else "")
    rows = [[_key(g["key"]), *_cells(g)] for g in report["groups"]]
    rows.append(["total", *_cells(report["totals"])])
    return title + "\n\n" + table(rows, [group_by or "", *HEADER])


def _cells(summary: dict[str, Any]) -> list[str]:
    return [
        *(str(summary[name]) for name in
          ("requests", "attempts", "failures", "rejected", "cache_hits", "prompt_tokens", "completion_tokens")),
        f"{summary['cost']:.6f}",
        f"{summary['saved_cost']:.6f}",
        *(f"{v:.1f}" if (v := summary[name]) is not None else "-" for name in ("p50_latency_ms", "p95_latency_ms")),
    ]


def _key(key: Any) -> str:
    if isinstance(key, list):
        return " / ".join(_key(part) for part in key)
    return "(none)" if key is None else str(key)
