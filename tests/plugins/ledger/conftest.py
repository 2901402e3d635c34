"""Databases for the ledger tests: an SQLite file in tmp_path, and a PostgreSQL database of our own.

PostgreSQL: ``MODELBROKER_TEST_DATABASE_URL`` (for example
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``) names the server; when it is
set and unreachable, the PostgreSQL tests fail. Unset, the default URL is used if
the server answers, else those tests are skipped. The run creates its own
database, ``mb_test_<random>``, and drops it at the end; each test starts with no
ledger tables in it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from modelbroker.plugins.storage.urls import DatabaseURL, safe_url

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
#: Read at import: tests/conftest.py removes every MODELBROKER_* variable from each test's environment.
PG_URL_FROM_ENV = os.environ.get("MODELBROKER_TEST_DATABASE_URL")


def dsn(url: str, database: str | None = None) -> str:
    """The asyncpg DSN of a database URL, optionally for another database."""
    text = DatabaseURL.parse(url).dsn
    return text if database is None else with_database(text, database)


def with_database(url: str, database: str) -> str:
    """``url`` naming another database on the same server."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


async def admin(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(dsn(url), timeout=5, command_timeout=30)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _unreachable(url: str) -> str | None:
    try:
        await admin(url, "SELECT 1")
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class PostgresDatabase:
    """A database of this test run on the server at ``server_url``."""

    def __init__(self, server_url: str, name: str) -> None:
        self.server_url = server_url
        self.name = name
        self.url = with_database(server_url, name)

    def reset(self) -> None:
        """No table at all, connections allowed."""
        self.start()
        asyncio.run(admin(self.url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public"))

    def stop(self) -> None:
        """Refuse new connections and end the open ones: an outage, for this database only."""
        asyncio.run(self._stop())

    async def _stop(self) -> None:
        connection = await asyncpg.connect(dsn(self.server_url), timeout=5, command_timeout=30)
        try:
            await connection.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                self.name,
            )
        finally:
            await connection.close()

    def start(self) -> None:
        asyncio.run(admin(self.server_url, f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true'))


@pytest.fixture(scope="session")
def postgres_database():
    """This run's own PostgreSQL database (skipped or failed as the module docstring says)."""
    server = PG_URL_FROM_ENV or DEFAULT_PG_URL
    shown = safe_url(server)
    problem = asyncio.run(_unreachable(server))
    if problem and PG_URL_FROM_ENV:
        pytest.fail(f"MODELBROKER_TEST_DATABASE_URL={shown} is unreachable: {problem}")
    if problem:
        pytest.skip(f"no PostgreSQL at {shown} ({problem}); set MODELBROKER_TEST_DATABASE_URL to run these tests")
    database = PostgresDatabase(server, f"mb_test_{uuid.uuid4().hex[:12]}")
    asyncio.run(admin(server, f'CREATE DATABASE "{database.name}"'))
    yield database
    asyncio.run(admin(server, f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)'))


@pytest.fixture
def postgres(postgres_database: PostgresDatabase) -> PostgresDatabase:
    """The run's PostgreSQL database, emptied of ledger tables for this test."""
    postgres_database.reset()
    return postgres_database


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{(tmp_path / 'ledger.db').as_posix()}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:
    """Each test that takes it runs twice: on an SQLite file, then on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres").url
