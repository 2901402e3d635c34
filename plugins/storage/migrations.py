"""Versioned migrations under a lock, for every set of tables (the ledger's, the client keys').

A set of tables is a ``Schema``: an ordered list of migrations and a version table
recording each one applied; the database's version is the number applied.
``Schema.migrate`` runs the missing ones in one write transaction after taking a lock
(``pg_advisory_xact_lock`` on PostgreSQL; on SQLite the transaction's own
``BEGIN IMMEDIATE``), so processes starting at once apply each migration once. Each
set has its own version table and lock, so each migrates on its own (the ledger may
be disabled while the keys are used). Never edit a migration that has shipped; add one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from modelbroker.plugins.storage.database import Connection, Database

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


class SchemaTooNew(Exception):
    """The database was migrated by a newer modelbroker than this one."""


@dataclass(frozen=True)
class Schema:
    """A set of tables: its migrations, the table recording them, and its lock.

    ``tables`` names them in messages ("the ledger database", "the client keys");
    ``hint`` says what to do besides upgrading when the database is ahead of this code.
    """

    tables: str
    migrations: list[Migration]
    version_table: str
    lock_key: int
    hint: str = ""

    async def migrate(self, db: Database, migrations: list[Migration] | None = None) -> int:
        """Bring the tables to the latest version; returns it. Safe from many processes at once."""
        async with db.writing() as conn:
            return await apply(conn, self.migrations if migrations is None else migrations, self.version_table,
                               self.lock_key, self._too_new)

    async def version(self, db: Database) -> int:
        """The version recorded in the database (0 for an empty one)."""
        async with db.reading() as conn:
            return await recorded_version(conn, self.version_table)

    def _too_new(self, found: int, known: int) -> SchemaTooNew:
        return SchemaTooNew(f"{self.tables} in the database are at schema version {found}, but this modelbroker "
                            f"knows versions up to {known}; upgrade modelbroker{self.hint}")
