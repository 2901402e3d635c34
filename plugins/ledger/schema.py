"""The ledger's tables and their migrations, with the version recorded in ``schema_version``.

``MIGRATIONS`` is an ordered list; the database's version is the number of
migrations applied. ``migrate`` runs the missing ones in one transaction that
holds a lock (``plugins/ledger/migrations.py``, shared with the client keys), so
two processes starting at once apply each migration once.

Never edit a migration that has shipped: change the tables below and add a
migration that brings an existing database to them.
"""

from __future__ import annotations

from datetime import timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from plugins.ledger.database import writing
from plugins.ledger.migrations import Migration, apply, version_table

#: Any constant works; it only has to be the same in every process sharing the database.
MIGRATION_LOCK_KEY = 0x6D62_6C65  # "mble"


class UTCDateTime(sa.TypeDecorator):
    """A UTC timestamp: ``timestamptz`` on PostgreSQL, ``YYYY-MM-DD HH:MM:SS.ffffff`` text on SQLite.

    Values go in as aware datetimes (converted to UTC) and come out aware, in UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = sa.MetaData()

schema_version = version_table("schema_version", metadata, UTCDateTime)

def _attempts_v1(meta: sa.MetaData) -> sa.Table:
    """The attempts table as migration 1 creates it (frozen: a later change is a new migration)."""
    return sa.Table(
        "attempts", meta,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("time", UTCDateTime, nullable=False),
        sa.Column("route", sa.Text),
        sa.Column("client", sa.Text),
        sa.Column("provider", sa.Text),
        sa.Column("provider_id", sa.Text),
        sa.Column("model", sa.Text),
        sa.Column("model_used", sa.Text),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("error_kind", sa.Text),
        sa.Column("status", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("prompt_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("total_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cached_tokens", sa.Integer),
        sa.Column("reasoning_tokens", sa.Integer),
        sa.Column("tokens_estimated", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("cost", sa.Double, nullable=False, server_default="0"),
        sa.Column("latency_ms", sa.Double),
        sa.Column("overhead_ms", sa.Double),
        sa.UniqueConstraint("request_id", "attempt", name="uq_attempts_request_attempt"),
        sa.Index("ix_attempts_time", "time"),
        sa.Index("ix_attempts_provider_time", "provider", "time"),
    )


#: One row per attempt; a request refused before any attempt has one row with attempt 0.
#: The latest shape: a migration that adds a column also adds it here (``append_column``).
attempts = _attempts_v1(metadata)

#: The columns a record fills (all but the surrogate key).
RECORD_COLUMNS = tuple(c.name for c in attempts.columns if c.name != "id")


def _create_attempts(conn: Connection) -> None:
    _attempts_v1(sa.MetaData()).create(conn, checkfirst=True)


#: Version N of the schema is the first N of these, applied in order.
MIGRATIONS: list[Migration] = [
    ("create the attempts table", _create_attempts),
]

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The database was migrated by a newer modelbroker than this one."""


async def migrate(engine: AsyncEngine, migrations: list[Migration] | None = None) -> int:
    """Bring the database to the latest version; returns it. Safe to run from many processes at once."""
    async with writing(engine) as conn:
        return await conn.run_sync(apply_migrations, MIGRATIONS if migrations is None else migrations)


async def current_version(engine: AsyncEngine) -> int:
    """The version recorded in the database (0 for an empty one)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_recorded_version)


def apply_migrations(conn: Connection, migrations: list[Migration]) -> int:
    return apply(conn, migrations, schema_version, MIGRATION_LOCK_KEY, _too_new)


def _too_new(found: int, known: int) -> SchemaTooNew:
    return SchemaTooNew(
        f"the ledger database is at schema version {found}, but this modelbroker knows "
        f"versions up to {known}; upgrade modelbroker, or point MODELBROKER_DATABASE_URL elsewhere"
    )


def _recorded_version(conn: Connection) -> int:
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    return conn.scalar(sa.select(sa.func.max(schema_version.c.version))) or 0
