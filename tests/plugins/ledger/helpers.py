"""Reading and writing the ledger directly, for the tests (each call opens and closes its own database)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

from modelbroker.plugins.ledger.bulk import BulkInsert
from modelbroker.plugins.ledger.records import _blank
from modelbroker.plugins.ledger.schema import migrate
from modelbroker.plugins.storage.database import open_database

BOOLEAN_COLUMNS = ("success", "tokens_estimated")


def run(coro):
    """Run a coroutine from a synchronous test."""
    return asyncio.run(coro)


async def with_db(url: str, work):
    db = open_database(url)
    try:
        return await work(db)
    finally:
        await db.close()


def read_rows(url: str) -> list[dict[str, Any]]:
    """Every row of ``attempts``, ordered by request id and attempt; times aware, booleans bool."""

    async def read(db):
        async with db.reading() as conn:
            rows = await conn.fetch("SELECT * FROM attempts ORDER BY request_id, attempt")
        found = []
        for row in rows:
            values = dict(zip(row.keys(), row))
            values["time"] = db.read_time(values["time"])
            for name in BOOLEAN_COLUMNS:
                assert values[name] in (0, 1), values  # SQLite keeps 0/1; anything else is a bug
                values[name] = bool(values[name])
            found.append(values)
        return found

    return run(with_db(url, read))


def record(request_id: str, attempt: int = 1, **fields: Any) -> dict[str, Any]:
    """A complete record; a success at provider ``p`` unless ``fields`` say otherwise. Its request
    uid is its request id unless given: one request per id, as when the gateway makes the ids."""
    row = _blank(request_id, attempt)
    row.update(success=True, outcome="ok", provider="p", provider_id="p/m", model="m", latency_ms=10.0,
               request_uid=request_id)
    row.update(fields)
    return row


def insert(url: str, rows: list[dict[str, Any]]) -> None:
    """Migrate, then insert ``rows`` as the writer does (duplicates ignored)."""

    async def write(db):
        await migrate(db)
        if rows:
            await BulkInsert(db).write(rows)

    run(with_db(url, write))


def at(text: str) -> datetime:
    """An aware UTC datetime from ``2025-01-31T12:00``."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
