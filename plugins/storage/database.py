"""The shared database: SQLite through the standard library, PostgreSQL through asyncpg.

Both speak the same small interface, so the ledger, its queries and the client keys
have one code path and write plain SQL with ``?`` placeholders:

    db = open_database(url)                  # no connection is opened yet
    async with db.writing() as conn:         # a write transaction (BEGIN IMMEDIATE on SQLite)
        await conn.execute("INSERT ...", (a, b))
    async with db.reading() as conn:         # a read transaction
        rows = await conn.fetch("SELECT ...", (since,))
    await db.close()

Rows are read by column name or position (``row["cost"]``, ``row[0]``). Timestamps
go in as aware datetimes and come out through ``db.read_time`` (on SQLite they are
``YYYY-MM-DD HH:MM:SS.ffffff`` text in UTC, the format earlier versions wrote).
Every driver error comes out as ``DatabaseError`` (``UniqueViolation`` for a broken
unique key), with a one-line message that never holds the statement's parameters.

Neither SQLAlchemy nor a driver is imported for SQLite: the gateway's memory is paid
on every replica, and together they held a large share of it (docs/performance.md,
'Measurements behind the code').
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from modelbroker.plugins.storage.urls import DatabaseURL, UnsupportedDatabase

__all__ = ["Connection", "Database", "DatabaseError", "UniqueViolation", "UnsupportedDatabase", "describe",
           "open_database"]

#: Seconds an SQLite writer waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_S = 30.0
#: Seconds to open a PostgreSQL connection, and to run one statement.
PG_CONNECT_TIMEOUT_S = 5.0
PG_COMMAND_TIMEOUT_S = 30.0


class DatabaseError(Exception):
    """A statement failed or the database could not be reached; the message is one line."""


class DatabaseURLError(DatabaseError):
    """MODELBROKER_DATABASE_URL does not parse one way only; the message holds no part of it."""


class UniqueViolation(DatabaseError):
    """A row would break a unique key."""


def error_from(exc: BaseException) -> DatabaseError:
    """A DatabaseError describing a driver's exception (type and first line, no parameters)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return DatabaseError(f"{type(exc).__name__}: {line}"[:300])


class Connection(Protocol):
    """One connection inside a transaction."""

    dialect: str

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the rows it changed."""

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for every row (values as the database takes them: see ``Database.bind_time``).

        ``rows`` may be a generator; SQLite consumes it in its own thread."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row of a query."""

    async def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row, or None."""

    async def has_table(self, name: str) -> bool:
        """Whether the table exists (in the current schema, on PostgreSQL)."""


class Database(Protocol):
    dialect: str
    url: DatabaseURL

    def reading(self) -> AbstractAsyncContextManager[Connection]:
        """A read transaction."""

    def writing(self) -> AbstractAsyncContextManager[Connection]:
        """A write transaction, committed when the block ends without an error."""

    def bind_time(self, moment: datetime) -> Any:
        """An aware datetime as this database stores it (for ``executemany`` rows)."""

    def read_time(self, value: Any) -> datetime | None:
        """A stored timestamp as an aware datetime in UTC."""

    async def close(self) -> None:
        """Close every connection; the database may be opened again by the next call."""


def open_database(url: str) -> Database:
    """The database ``url`` names; raises UnsupportedDatabase for another kind of URL."""
    parsed = DatabaseURL.parse(url)
    if parsed.backend == "sqlite":
        from modelbroker.plugins.storage.sqlite_db import SQLiteDatabase

        return SQLiteDatabase(parsed, busy_timeout_s=SQLITE_BUSY_TIMEOUT_S)
    from modelbroker.plugins.storage.postgres_db import PostgresDatabase

    return PostgresDatabase(parsed, connect_timeout_s=PG_CONNECT_TIMEOUT_S, command_timeout_s=PG_COMMAND_TIMEOUT_S)


def placeholders(count: int) -> str:
    """``?, ?, ?`` for an ``IN (...)`` of ``count`` values."""
    return ", ".join("?" * count)


def describe(exc: BaseException) -> str:
    """A one-line description of a database error (without the statement and its parameters)."""
    return str(exc if isinstance(exc, DatabaseError) else error_from(exc))
