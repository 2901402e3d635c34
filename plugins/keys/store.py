"""The ``client_keys`` table in the ledger's database, its migrations, and the queries on it.

The keys have their own version table, ``keys_schema_version``, so they migrate
independently of the ledger (which may be disabled), with the storage's one migration
helper (``plugins/storage/migrations.py``): one transaction under a lock, so gateways
and the CLI may start at once. Never edit a migration that has shipped; add one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from modelbroker.plugins.storage.database import Connection, Database, UniqueViolation, placeholders
from modelbroker.plugins.storage.migrations import TIMESTAMP, Migration, Schema

#: Not the ledger's lock key: the two version tables migrate independently.
MIGRATION_LOCK_KEY = 0x6D62_6B79  # "mbky"
VERSION_TABLE = "keys_schema_version"

#: Column types that differ between the two databases.
_TYPES = {
    "sqlite": {"id": "INTEGER", "float": "DOUBLE"},
    "postgresql": {"id": "SERIAL", "float": "DOUBLE PRECISION"},
}

#: A key's roles: a client calls the model APIs and reads its own usage; an admin may also call
#: /admin/*, /dashboard, every client's /usage and /metrics.
CLIENT, ADMIN = "client", "admin"
ROLES = (CLIENT, ADMIN)

#: The columns of ``client_keys`` a ClientKey is read from (all but the surrogate key).
COLUMNS = ("name", "prefix", "key_hash", "budget_daily", "budget_monthly", "rpm", "tpm", "models", "role",
           "max_cost_per_request", "created_at", "revoked_at")
#: The columns a new key fills (a key is stored unrevoked).
_INSERTED = COLUMNS[:-1]


async def _create_client_keys(conn: Connection) -> None:
    """The table as migration 1 creates it (frozen: a later change is a new migration).

    The same columns, types, keys and index SQLAlchemy created in earlier versions.
    One row per key ever created; a revoked key keeps its row, with ``revoked_at`` set.
    ``models`` is a JSON list (NULL: any model).
    """
    t = {**_TYPES[conn.dialect], "time": TIMESTAMP[conn.dialect]}
    await conn.execute(f"""CREATE TABLE IF NOT EXISTS client_keys (
        id {t['id']} NOT NULL,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        key_hash TEXT NOT NULL,
        budget_daily {t['float']},
        budget_monthly {t['float']},
        rpm INTEGER,
        tpm INTEGER,
        models TEXT,
        created_at {t['time']} NOT NULL,
        revoked_at {t['time']},
        PRIMARY KEY (id),
        UNIQUE (key_hash)
    )""")
    await conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS uq_client_keys_active_name ON client_keys (name) "
                       "WHERE revoked_at IS NULL")


async def _add_role(conn: Connection) -> None:
    """Migration 2 (frozen): every key has a role; the keys made before it are client keys."""
    await conn.execute(f"ALTER TABLE client_keys ADD COLUMN role TEXT NOT NULL DEFAULT '{CLIENT}'")


async def _add_max_cost(conn: Connection) -> None:
    """Migration 3 (frozen): a key's default cost ceiling per request (NULL: none)."""
    await conn.execute(f"ALTER TABLE client_keys ADD COLUMN max_cost_per_request {_TYPES[conn.dialect]['float']}")


MIGRATIONS: list[Migration] = [
    ("create the client_keys table", _create_client_keys),
    ("add the role column: client or admin", _add_role),
    ("add the max_cost_per_request column: a key's default cost ceiling", _add_max_cost),
]


class KeyNameTaken(Exception):
    """An unrevoked key already has this name."""


@dataclass(frozen=True, slots=True)
class ClientKey:
    """One row of ``client_keys``. ``models`` None: any model; budgets in cost units; ``role``
    one of ROLES; ``max_cost_per_request``: the cost ceiling of a request that sets none lower."""

    name: str
    prefix: str
    key_hash: str
    created_at: datetime
    budget_daily: float | None = None
    budget_monthly: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    models: tuple[str, ...] | None = None
    revoked_at: datetime | None = None
    role: str = CLIENT
    max_cost_per_request: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def admin(self) -> bool:
        return self.role == ADMIN

    @property
    def limited(self) -> bool:
        """Whether any budget or rate applies (else there is nothing to count before a request)."""
        return any(v is not None for v in (self.budget_daily, self.budget_monthly, self.rpm, self.tpm))


KEYS = Schema("the client keys", MIGRATIONS, VERSION_TABLE, MIGRATION_LOCK_KEY)


async def migrate(db: Database) -> int:
    """Bring the keys' tables to the latest version; returns it. Safe from many processes at once."""
    return await KEYS.migrate(db)


async def load_keys(db: Database) -> list[ClientKey]:
    """Every key, revoked ones included, oldest first."""
    async with db.reading() as conn:
        rows = await conn.fetch(f"SELECT {', '.join(COLUMNS)} FROM client_keys ORDER BY id")
    return [_from_row(db, row) for row in rows]


async def insert_key(db: Database, key: ClientKey) -> None:
    """Store ``key``; raises KeyNameTaken if an unrevoked key has its name."""
    values = (
        key.name, key.prefix, key.key_hash, key.budget_daily, key.budget_monthly, key.rpm, key.tpm,
        orjson.dumps(list(key.models)).decode() if key.models is not None else None, key.role,
        key.max_cost_per_request, key.created_at,
    )
    try:
        async with db.writing() as conn:
            taken = await conn.fetchval(
                "SELECT count(*) FROM client_keys WHERE name = ? AND revoked_at IS NULL", (key.name,))
            if taken:
                raise KeyNameTaken(key.name)
            await conn.execute(
                f"INSERT INTO client_keys ({', '.join(_INSERTED)}) VALUES ({placeholders(len(_INSERTED))})", values)
    except UniqueViolation:  # another process inserted the same name between our check and insert
        raise KeyNameTaken(key.name) from None


async def revoke_key(db: Database, name: str) -> int:
    """Revoke the unrevoked key called ``name``; returns how many were revoked (0 or 1)."""
    async with db.writing() as conn:
        return await conn.execute(
            "UPDATE client_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
            (datetime.now(timezone.utc), name),
        )


async def ledger_spend(db: Database, names: Iterable[str], day_start: datetime,
                       month_start: datetime) -> dict[str, tuple[float, float]]:
    """Name -> (cost since ``day_start``, cost since ``month_start``) from the ledger's
    ``attempts`` (whose ``client`` is the key's name); empty if there is no ledger."""
    names = sorted(set(names))
    if not names:
        return {}
    query = (
        "SELECT client, coalesce(sum(CASE WHEN time >= ? THEN cost ELSE 0.0 END), 0.0), "
        "coalesce(sum(cost), 0.0) "
        f"FROM attempts WHERE time >= ? AND client IN ({placeholders(len(names))}) GROUP BY client"
    )
    async with db.reading() as conn:
        if not await conn.has_table("attempts"):
            return {}
        rows = await conn.fetch(query, (day_start, month_start, *names))
    return {row[0]: (float(row[1]), float(row[2])) for row in rows}


def _from_row(db: Database, row: Any) -> ClientKey:
    models = tuple(orjson.loads(row["models"])) if row["models"] is not None else None
    return ClientKey(
        name=row["name"], prefix=row["prefix"], key_hash=row["key_hash"],
        created_at=db.read_time(row["created_at"]), budget_daily=row["budget_daily"],
        budget_monthly=row["budget_monthly"], rpm=row["rpm"], tpm=row["tpm"], models=models,
        revoked_at=db.read_time(row["revoked_at"]), role=row["role"],
        max_cost_per_request=row["max_cost_per_request"],
    )
