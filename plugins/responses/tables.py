"""The ``stored_responses`` table in the ledger's database, its migrations, and the statements on it.

One row per response created with ``store`` not false: the request's own input items and
the whole Response (JSON text), the response it continues, who created it, and when it
expires. A conversation is rebuilt by following ``previous_response_id`` back, in one
recursive query. The table has its own version table and lock, so it migrates on its own
(the ledger may be disabled), with the storage's migration helper. Never edit a migration
that has shipped; add one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from modelbroker.plugins.storage.database import Connection, Database, placeholders
from modelbroker.plugins.storage.migrations import TIMESTAMP, Migration, Schema

if TYPE_CHECKING:
    import sqlite3

#: Not the ledger's or the keys' lock key: each set of tables migrates on its own.
MIGRATION_LOCK_KEY = 0x6D62_7273  # "mbrs"
VERSION_TABLE = "responses_schema_version"
#: How far back a conversation is followed: a guard, far beyond any real one.
MAX_CHAIN = 10_000
#: Ids in one ``IN (...)`` list (SQLite allows 32,766 parameters from 3.32 on, 999 before).
IDS_PER_STATEMENT = 500

COLUMNS = ("id", "previous_response_id", "owner", "created_at", "expires_at", "input", "response")


async def _create_stored_responses(conn: Connection) -> None:
    """Migration 1 (frozen: a later change is a new migration)."""
    time = TIMESTAMP[conn.dialect]
    await conn.execute(f"""CREATE TABLE IF NOT EXISTS stored_responses (
        id TEXT NOT NULL PRIMARY KEY,
        previous_response_id TEXT,
        owner TEXT,
        created_at {time} NOT NULL,
        expires_at {time} NOT NULL,
        input TEXT NOT NULL,
        response TEXT NOT NULL
    )""")
    await conn.execute("CREATE INDEX IF NOT EXISTS ix_stored_responses_expires_at ON stored_responses (expires_at)")


MIGRATIONS: list[Migration] = [
    ("create the stored_responses table", _create_stored_responses),
]

RESPONSES = Schema("the stored responses", MIGRATIONS, VERSION_TABLE, MIGRATION_LOCK_KEY)

INSERT = (f"INSERT INTO stored_responses ({', '.join(COLUMNS)}) VALUES ({placeholders(len(COLUMNS))}) "
          "ON CONFLICT (id) DO NOTHING")  # a batch written twice (a retry after a lost commit) is harmless

#: The response named and every one before it, newest first (``depth`` 0 is the one named).
CHAIN = f"""WITH RECURSIVE chain (id, previous_response_id, owner, created_at, expires_at, input, response, depth) AS (
    SELECT id, previous_response_id, owner, created_at, expires_at, input, response, 0
    FROM stored_responses WHERE id = ? AND expires_at > ?
    UNION ALL
    SELECT r.id, r.previous_response_id, r.owner, r.created_at, r.expires_at, r.input, r.response, chain.depth + 1
    FROM stored_responses r JOIN chain ON r.id = chain.previous_response_id
    WHERE r.expires_at > ? AND chain.depth < {MAX_CHAIN}
) SELECT id, previous_response_id, owner, created_at, expires_at, input, response FROM chain ORDER BY depth"""


async def migrate(db: Database) -> int:
    """Bring the table to the latest version; safe from many processes at once."""
    return await RESPONSES.migrate(db)


async def insert(conn: Connection, rows: Iterable[Sequence[Any]]) -> None:
    await conn.executemany(INSERT, rows)


@cache
def insert_rows(rows: int) -> str:
    """The INSERT of ``rows`` rows at once (positional parameters, row after row)."""
    row = f"({placeholders(len(COLUMNS))})"
    return (f"INSERT INTO stored_responses ({', '.join(COLUMNS)}) VALUES {', '.join([row] * rows)} "
            "ON CONFLICT (id) DO NOTHING")


def sqlite_inserts(rows: Sequence[Sequence[Any]], largest: int) -> list[tuple[str, tuple[Any, ...]]]:
    """The INSERTs of ``rows`` for SQLite: ``largest`` rows a statement, the rest in the powers
    of two below it (each size one cached statement). Made on the event loop, so that SQLite's
    thread runs no Python of its own (``write_sqlite``)."""
    statements = []
    start, size = 0, largest
    while start < len(rows):
        while start + size > len(rows):
            size //= 2
        statements.append((insert_rows(size), tuple(itertools.chain.from_iterable(rows[start:start + size]))))
        start += size
    return statements


def write_sqlite(conn: sqlite3.Connection, inserts: Sequence[tuple[str, tuple[Any, ...]]],
                 extended: Sequence[str], until: Any) -> None:
    """A batch, in SQLite's own thread inside one transaction: the ``inserts``, then the new
    expiry ``until`` of ``extended``.

    Written as the ledger writes its batches (plugins/ledger/bulk.py), for the same reason:
    sqlite3 lets go of the GIL for every statement, and while the event loop is busy taking
    it back waits for Python's switch interval. A statement a row fell behind at a few
    thousand responses a second, and the responses waiting to be written piled up."""
    for statement, parameters in inserts:
        conn.execute(statement, parameters)
    for first in range(0, len(extended), IDS_PER_STATEMENT):
        ids = extended[first:first + IDS_PER_STATEMENT]
        conn.execute(f"UPDATE stored_responses SET expires_at = ? WHERE expires_at < ? AND id IN "
                     f"({placeholders(len(ids))})", (until, until, *ids))


async def extend(conn: Connection, ids: list[str], until: Any) -> None:
    """Keep the rows ``ids`` at least until ``until``: a conversation lives as long as its last turn."""
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        chunk = ids[start:start + IDS_PER_STATEMENT]
        await conn.execute(f"UPDATE stored_responses SET expires_at = ? WHERE expires_at < ? AND id IN "
                           f"({placeholders(len(chunk))})", (until, until, *chunk))


async def chain(conn: Connection, response_id: str, now: datetime) -> list[Any]:
    return await conn.fetch(CHAIN, (response_id, now, now))


async def one(conn: Connection, response_id: str, now: datetime) -> Any | None:
    rows = await conn.fetch("SELECT id, previous_response_id, owner, created_at, expires_at, input, response "
                            "FROM stored_responses WHERE id = ? AND expires_at > ?", (response_id, now))
    return rows[0] if rows else None


async def delete(conn: Connection, response_id: str) -> int:
    return await conn.execute("DELETE FROM stored_responses WHERE id = ?", (response_id,))


async def purge(conn: Connection, now: datetime) -> int:
    """Delete every expired row; returns how many."""
    return await conn.execute("DELETE FROM stored_responses WHERE expires_at <= ?", (now,))
