"""The engine: one SQLAlchemy async (Core) code path for SQLite and PostgreSQL.

SQLite (aiosqlite) runs in WAL mode with a busy timeout, so several processes on
one machine can write to the same file; its write transactions start with
``BEGIN IMMEDIATE``, so a transaction that reads, then writes (a migration) waits
for the lock instead of failing. PostgreSQL (asyncpg) connections are checked
before use, so a restarted server is reconnected to.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

#: Seconds an SQLite writer waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_S = 30.0
#: Seconds to open a PostgreSQL connection, and to run one statement.
PG_CONNECT_TIMEOUT_S = 5.0
PG_COMMAND_TIMEOUT_S = 30.0

DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


class UnsupportedDatabase(ValueError):
    """The database URL names neither SQLite nor PostgreSQL."""


def async_url(url: str) -> str:
    """The URL with the async driver this ledger uses (``sqlite://`` -> ``sqlite+aiosqlite://``)."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    backend = parsed.get_backend_name()
    if backend not in DRIVERS:
        raise UnsupportedDatabase(
            f"MODELBROKER_DATABASE_URL: unsupported database {backend!r} in "
            f"{parsed.render_as_string(hide_password=True)}; use sqlite+aiosqlite:///path/to/modelbroker.db "
            "or postgresql+asyncpg://user:password@host:5432/dbname"
        )
    return parsed.set(drivername=DRIVERS[backend]).render_as_string(hide_password=False)


def make_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; no connection is opened yet."""
    url = async_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _sqlite_setup(engine)
        return engine
    return create_async_engine(
        url, pool_pre_ping=True, pool_size=4, max_overflow=4,
        connect_args={"timeout": PG_CONNECT_TIMEOUT_S, "command_timeout": PG_COMMAND_TIMEOUT_S},
    )


def writing(engine: AsyncEngine):
    """``async with writing(engine) as conn``: a write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
    return engine.execution_options(ledger_write=True).begin()


def _sqlite_setup(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # the driver emits no BEGIN; on_begin does
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn) -> None:
        immediate = conn.get_execution_options().get("ledger_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
