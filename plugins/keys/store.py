"""The ``client_keys`` table in the ledger's database, its migrations, and the queries on it.

The keys have their own version table, ``keys_schema_version``, so they migrate
independently of the ledger (which may be disabled); the mechanism, migrations in one
transaction under a lock, is the ledger's (``plugins/ledger/migrations.py``): gateways
and the CLI may start at once. Never edit a migration that has shipped; add one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from plugins.ledger.database import writing
from plugins.ledger.migrations import Migration, apply, version_table
from plugins.ledger.schema import UTCDateTime, attempts

#: Not the ledger's lock key: the two version tables migrate independently.
MIGRATION_LOCK_KEY = 0x6D62_6B79  # "mbky"

metadata = sa.MetaData()

keys_schema_version = version_table("keys_schema_version", metadata, UTCDateTime)


def _client_keys_v1(meta: sa.MetaData) -> sa.Table:
    """The table as migration 1 creates it (frozen: a later change is a new migration)."""
    return sa.Table(
        "client_keys", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("prefix", sa.Text, nullable=False),
        sa.Column("key_hash", sa.Text, nullable=False, unique=True),
        sa.Column("budget_daily", sa.Double),
        sa.Column("budget_monthly", sa.Double),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        sa.Column("models", sa.Text),  # a JSON list; NULL: any model
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime),
        sa.Index("uq_client_keys_active_name", "name", unique=True,
                 sqlite_where=sa.text("revoked_at IS NULL"), postgresql_where=sa.text("revoked_at IS NULL")),
    )


#: One row per key ever created; a revoked key keeps its row, with ``revoked_at`` set.
client_keys = _client_keys_v1(metadata)

MIGRATIONS: list[Migration] = [
    ("create the client_keys table", lambda conn: _client_keys_v1(sa.MetaData()).create(conn, checkfirst=True)),
]


class KeysSchemaTooNew(Exception):
    """The database was migrated by a newer modelbroker than this one."""


class KeyNameTaken(Exception):
    """An unrevoked key already has this name."""


@dataclass(frozen=True, slots=True)
class ClientKey:
    """One row of ``client_keys``. ``models`` None: any model; budgets in cost units."""

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

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def limited(self) -> bool:
        """Whether any budget or rate applies (else there is nothing to count before a request)."""
        return any(v is not None for v in (self.budget_daily, self.budget_monthly, self.rpm, self.tpm))


async def migrate(engine: AsyncEngine) -> int:
    """Bring the keys' tables to the latest version; returns it. Safe from many processes at once."""
    async with writing(engine) as conn:
        return await conn.run_sync(apply_migrations, MIGRATIONS)


def apply_migrations(conn: Connection, migrations: list[Migration]) -> int:
    return apply(conn, migrations, keys_schema_version, MIGRATION_LOCK_KEY, _too_new)


def _too_new(found: int, known: int) -> KeysSchemaTooNew:
    return KeysSchemaTooNew(
        f"the client keys in the database are at schema version {found}, but this modelbroker "
        f"knows versions up to {known}; upgrade modelbroker"
    )


async def load_keys(engine: AsyncEngine) -> list[ClientKey]:
    """Every key, revoked ones included, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(client_keys).order_by(client_keys.c.id))
        return [_from_row(row) for row in rows]


async def insert_key(engine: AsyncEngine, key: ClientKey) -> None:
    """Store ``key``; raises KeyNameTaken if an unrevoked key has its name."""
    values = {
        "name": key.name, "prefix": key.prefix, "key_hash": key.key_hash, "created_at": key.created_at,
        "budget_daily": key.budget_daily, "budget_monthly": key.budget_monthly, "rpm": key.rpm, "tpm": key.tpm,
        "models": orjson.dumps(list(key.models)).decode() if key.models is not None else None,
    }
    try:
        async with writing(engine) as conn:
            taken = await conn.scalar(sa.select(sa.func.count()).where(
                client_keys.c.name == key.name, client_keys.c.revoked_at.is_(None)))
            if taken:
                raise KeyNameTaken(key.name)
            await conn.execute(client_keys.insert().values(**values))
    except IntegrityError:  # another process inserted the same name between our check and insert
        raise KeyNameTaken(key.name) from None


async def revoke_key(engine: AsyncEngine, name: str) -> int:
    """Revoke the unrevoked key called ``name``; returns how many were revoked (0 or 1)."""
    async with writing(engine) as conn:
        result = await conn.execute(
            client_keys.update()
            .where(client_keys.c.name == name, client_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(timezone.utc))
        )
        return result.rowcount


async def ledger_spend(engine: AsyncEngine, names: Iterable[str], day_start: datetime,
                       month_start: datetime) -> dict[str, tuple[float, float]]:
    """Name -> (cost since ``day_start``, cost since ``month_start``) from the ledger's
    ``attempts`` (whose ``client`` is the key's name); empty if there is no ledger."""
    names = sorted(set(names))
    if not names:
        return {}
    c = attempts.c
    query = (
        sa.select(c.client,
                  sa.func.coalesce(sa.func.sum(sa.case((c.time >= day_start, c.cost), else_=0.0)), 0.0),
                  sa.func.coalesce(sa.func.sum(c.cost), 0.0))
        .where(c.time >= month_start, c.client.in_(names))
        .group_by(c.client)
    )
    async with engine.connect() as conn:
        if not await conn.run_sync(lambda sync: sa.inspect(sync).has_table("attempts")):
            return {}
        return {row[0]: (float(row[1]), float(row[2])) for row in await conn.execute(query)}


def _from_row(row) -> ClientKey:
    models = tuple(orjson.loads(row.models)) if row.models is not None else None
    return ClientKey(
        name=row.name, prefix=row.prefix, key_hash=row.key_hash, created_at=row.created_at,
        budget_daily=row.budget_daily, budget_monthly=row.budget_monthly, rpm=row.rpm, tpm=row.tpm,
        models=models, revoked_at=row.revoked_at,
    )
