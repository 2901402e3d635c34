"""Versioned migrations under a lock, shared by the ledger's tables and the client keys' tables.

A set of tables has an ordered list of migrations and a version table recording
each one applied; the database's version is the number applied. ``apply`` runs the
missing ones in the caller's write transaction after taking a lock
(``pg_advisory_xact_lock`` on PostgreSQL; on SQLite the transaction's own
``BEGIN IMMEDIATE``), so processes starting at once apply each migration once.
Never edit a migration that has shipped; add one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from modelbroker.plugins.ledger.database import Connection

#: A description and a coroutine function that changes the tables through the connection.
Migration = tuple[str, Callable[[Connection], Awaitable[None]]]

#: The column type of a UTC timestamp, per dialect (SQLite keeps it as text; see sqlite_db.py).
TIMESTAMP = {"sqlite": "DATETIME", "postgresql": "TIMESTAMP WITH TIME ZONE"}


async def recorded_version(conn: Connection, versions: str) -> int:
    """The version recorded in the table ``versions`` (0 when there is no such table)."""
    if not await conn.has_table(versions):
        return 0
    return await conn.fetchval(f"SELECT max(version) FROM {versions}") or 0


async def apply(conn: Connection, migrations: list[Migration], versions: str, lock_key: int,
                too_new: Callable[[int, int], Exception]) -> int:
    """Apply the migrations the database lacks; returns the version reached.

    ``too_new(found, known)`` is raised when the database is ahead of ``migrations``.
    """
    if conn.dialect == "postgresql":
        await conn.execute("SELECT pg_advisory_xact_lock(?)", (lock_key,))
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {versions} (version INTEGER NOT NULL PRIMARY KEY, "
        f"description TEXT NOT NULL, applied_at {TIMESTAMP[conn.dialect]} NOT NULL)"
    )
    version = await conn.fetchval(f"SELECT max(version) FROM {versions}") or 0
    if version > len(migrations):
        raise too_new(version, len(migrations))
    for number, (description, migration) in enumerate(migrations[version:], start=version + 1):
        await migration(conn)
        await conn.execute(f"INSERT INTO {versions} (version, description, applied_at) VALUES (?, ?, ?)",
                           (number, description, datetime.now(timezone.utc)))
    return len(migrations)
