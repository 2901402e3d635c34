"""The ledger's tables and their migrations, with the version recorded in ``schema_version``.

``MIGRATIONS`` is an ordered list; the database's version is the number of
migrations applied. ``migrate`` runs the missing ones in one transaction that
holds a lock (``plugins/storage/migrations.py``, the keys' tables use the same), so
two processes starting at once apply each migration once.

Never edit a migration that has shipped: add a migration that brings an existing
database to the new shape, and add its columns to ``RECORD_COLUMNS``.
"""

from __future__ import annotations

from modelbroker.plugins.storage.database import Connection, Database
from modelbroker.plugins.storage.migrations import TIMESTAMP, Migration, Schema

#: Any constant works; it only has to be the same in every process sharing the database.
MIGRATION_LOCK_KEY = 0x6D62_6C65  # "mble"
VERSION_TABLE = "schema_version"

#: Column types that differ between the two databases.
_TYPES = {
    "sqlite": {"id": "INTEGER NOT NULL PRIMARY KEY", "bool": "BOOLEAN", "false": "0", "float": "DOUBLE"},
    "postgresql": {"id": "BIGSERIAL NOT NULL PRIMARY KEY", "bool": "BOOLEAN", "false": "false",
                   "float": "DOUBLE PRECISION"},
}


#: Migration 1's columns but the surrogate key (frozen, like the migration).
_V1_RECORD_COLUMNS = (
    "request_id", "attempt", "time", "route", "client", "provider", "provider_id", "model", "model_used",
    "success", "outcome", "error_kind", "status", "error", "prompt_tokens", "completion_tokens",
    "total_tokens", "cached_tokens", "reasoning_tokens", "tokens_estimated", "cost", "latency_ms",
    "overhead_ms",
)


def _attempts_v1_columns(dialect: str) -> str:
    """The columns of migration 1's attempts table (frozen: a later change is a new migration)."""
    t = {**_TYPES[dialect], "time": TIMESTAMP[dialect]}
    return f"""
        id {t['id']},
        request_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        time {t['time']} NOT NULL,
        route TEXT,
        client TEXT,
        provider TEXT,
        provider_id TEXT,
        model TEXT,
        model_used TEXT,
        success {t['bool']} NOT NULL,
        outcome TEXT NOT NULL,
        error_kind TEXT,
        status INTEGER,
        error TEXT,
        prompt_tokens INTEGER DEFAULT '0' NOT NULL,
        completion_tokens INTEGER DEFAULT '0' NOT NULL,
        total_tokens INTEGER DEFAULT '0' NOT NULL,
        cached_tokens INTEGER,
        reasoning_tokens INTEGER,
        tokens_estimated {t['bool']} DEFAULT {t['false']} NOT NULL,
        cost {t['float']} DEFAULT '0' NOT NULL,
        latency_ms {t['float']},
        overhead_ms {t['float']}"""


async def _create_attempts(conn: Connection) -> None:
    """Migration 1: the attempts table as SQLAlchemy created it in earlier versions."""
    await conn.execute(f"""CREATE TABLE IF NOT EXISTS attempts ({_attempts_v1_columns(conn.dialect)},
        CONSTRAINT uq_attempts_request_attempt UNIQUE (request_id, attempt)
    )""")
    await conn.execute("CREATE INDEX IF NOT EXISTS ix_attempts_time ON attempts (time)")
    await conn.execute("CREATE INDEX IF NOT EXISTS ix_attempts_provider_time ON attempts (provider, time)")


async def _key_rows_by_request_uid(conn: Connection) -> None:
    """Migration 2: rows are unique by (request_uid, attempt), the gateway's own request id,
    no longer by (request_id, attempt): a client that reused an ``x-request-id`` lost the
    second request's rows. Existing rows take their request_id as request_uid.

    PostgreSQL alters the table; SQLite cannot drop a constraint, so it copies the rows
    into a new table without it.
    """
    if conn.dialect == "postgresql":
        await conn.execute("ALTER TABLE attempts ADD COLUMN request_uid TEXT")
        await conn.execute("UPDATE attempts SET request_uid = request_id")
        await conn.execute("ALTER TABLE attempts DROP CONSTRAINT uq_attempts_request_attempt")
    else:
        columns = ", ".join(("id", *_V1_RECORD_COLUMNS))
        await conn.execute(f"CREATE TABLE attempts_v2 ({_attempts_v1_columns(conn.dialect)}, request_uid TEXT)")
        await conn.execute(f"INSERT INTO attempts_v2 ({columns}, request_uid) "
                           f"SELECT {columns}, request_id FROM attempts")
        await conn.execute("DROP TABLE attempts")
        await conn.execute("ALTER TABLE attempts_v2 RENAME TO attempts")
        await conn.execute("CREATE INDEX ix_attempts_time ON attempts (time)")
        await conn.execute("CREATE INDEX ix_attempts_provider_time ON attempts (provider, time)")
    await conn.execute("CREATE UNIQUE INDEX uq_attempts_request_uid_attempt ON attempts (request_uid, attempt)")
    await conn.execute("CREATE INDEX ix_attempts_request_id ON attempts (request_id)")


async def _add_surface(conn: Connection) -> None:
    """Migration 3: the API each request came in through (``chat``, ``messages``, ...); rows
    written before it have none."""
    await conn.execute("ALTER TABLE attempts ADD COLUMN surface TEXT")


async def _add_cache_columns(conn: Connection) -> None:
    """Migration 4: requests answered from the response cache (``cache_hit``, attempt 0, cost 0)
    and the cost each one saved; rows written before it are no hits and saved nothing."""
    t = _TYPES[conn.dialect]
    await conn.execute(f"ALTER TABLE attempts ADD COLUMN cache_hit {t['bool']} DEFAULT {t['false']} NOT NULL")
    await conn.execute(f"ALTER TABLE attempts ADD COLUMN saved_cost {t['float']} DEFAULT '0' NOT NULL")


#: Version N of the schema is the first N of these, applied in order.
MIGRATIONS: list[Migration] = [
    ("create the attempts table", _create_attempts),
    ("key attempts by the gateway's request uid", _key_rows_by_request_uid),
    ("record the surface of each request", _add_surface),
    ("record cache hits and the cost they saved", _add_cache_columns),
]

SCHEMA_VERSION = len(MIGRATIONS)

#: The columns a record fills (all but the surrogate key), in the latest shape.
RECORD_COLUMNS = (*_V1_RECORD_COLUMNS, "request_uid", "surface", "cache_hit", "saved_cost")


LEDGER = Schema("the ledger's tables", MIGRATIONS, VERSION_TABLE, MIGRATION_LOCK_KEY,
                hint=", or point MODELBROKER_DATABASE_URL elsewhere")


async def migrate(db: Database, migrations: list[Migration] | None = None) -> int:
    """Bring the database to the latest version; returns it. Safe to run from many processes at once."""
    return await LEDGER.migrate(db, migrations)


async def current_version(db: Database) -> int:
    """The version recorded in the database (0 for an empty one)."""
    return await LEDGER.version(db)
