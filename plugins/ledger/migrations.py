"""Versioned migrations under a lock, shared by the ledger's tables and the client keys' tables.

A set of tables has an ordered list of migrations and a version table recording
each one applied; the database's version is the number applied. ``apply`` runs the
missing ones in the caller's transaction after taking a lock (``pg_advisory_xact_lock``
on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite comes from the transaction itself), so
processes starting at once apply each migration once. Never edit a migration that has
shipped; add one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection

Migration = tuple[str, Callable[[Connection], None]]


def version_table(name: str, metadata: sa.MetaData, applied_at_type: sa.types.TypeEngine) -> sa.Table:
    """The table recording which migrations ran: version, description, when."""
    return sa.Table(
        name, metadata,
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("applied_at", applied_at_type, nullable=False),
    )


def apply(conn: Connection, migrations: list[Migration], versions: sa.Table, lock_key: int,
          too_new: Callable[[int, int], Exception]) -> int:
    """Apply the migrations the database lacks; returns the version reached.

    ``too_new(found, known)`` is raised when the database is ahead of ``migrations``.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key)))
    versions.create(conn, checkfirst=True)
    version = conn.scalar(sa.select(sa.func.max(versions.c.version))) or 0
    if version > len(migrations):
        raise too_new(version, len(migrations))
    for number, (description, migration) in enumerate(migrations[version:], start=version + 1):
        migration(conn)
        conn.execute(versions.insert().values(
            version=number, description=description, applied_at=datetime.now(timezone.utc)))
    return len(migrations)
