"""Reading and writing the ledger directly, for the tests (each call opens and disposes its own engine)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from plugins.ledger.database import make_engine, writing
from plugins.ledger.records import _blank
from plugins.ledger.schema import attempts, migrate
from plugins.ledger.writer import insert_ignoring_duplicates


def run(coro):
    """Run a coroutine from a synchronous test."""
    return asyncio.run(coro)


async def with_engine(url: str, work):
    engine = make_engine(url)
    try:
        return await work(engine)
    finally:
        await engine.dispose()


def read_rows(url: str) -> list[dict[str, Any]]:
    """Every row of ``attempts``, ordered by request id and attempt."""

    async def read(engine):
        async with engine.connect() as conn:
            result = await conn.execute(sa.select(attempts).order_by(attempts.c.request_id, attempts.c.attempt))
            return [dict(row._mapping) for row in result]

    return run(with_engine(url, read))


def record(request_id: str, attempt: int = 1, **fields: Any) -> dict[str, Any]:
    """A complete record; a success at provider ``p`` unless ``fields`` say otherwise."""
    row = _blank(request_id, attempt)
    row.update(success=True, outcome="ok", provider="p", provider_id="p/m", model="m", latency_ms=10.0)
    row.update(fields)
    return row


def insert(url: str, rows: list[dict[str, Any]]) -> None:
    """Migrate, then insert ``rows`` as the writer does (duplicates ignored)."""

    async def write(engine):
        await migrate(engine)
        if rows:
            async with writing(engine) as conn:
                await conn.execute(insert_ignoring_duplicates(engine.dialect.name), rows)

    run(with_engine(url, write))


def at(text: str) -> datetime:
    """An aware UTC datetime from ``2025-01-31T12:00``."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
