"""A PostgreSQL database of the test run's own, for the suites that run on PostgreSQL too.

``MODELBROKER_TEST_DATABASE_URL`` names the server: a run fails if it is set and does not
answer. Unset, ``DEFAULT_URL`` is tried, and the tests that need it are skipped when it does
not answer. Each suite creates a database of its own and drops it at the end.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from modelbroker.plugins.storage.urls import DatabaseURL, safe_url

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
#: Read at import: tests/conftest.py removes every MODELBROKER_* variable from each test's environment.
FROM_ENV = os.environ.get("MODELBROKER_TEST_DATABASE_URL")


def database_of(url: str) -> str:
    """The database a PostgreSQL URL names."""
    return urlsplit(url).path.lstrip("/")


def with_database(url: str, database: str) -> str:
    """A PostgreSQL URL naming ``database`` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def run_sql(url: str, *statements: str) -> None:
    """Each statement on a connection of its own to ``url``."""
    import asyncpg

    connection = await asyncpg.connect(DatabaseURL.parse(url).dsn, timeout=5, command_timeout=30)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def own_database(prefix: str) -> Iterator[str]:
    """For a session fixture: the URL of a new database ``<prefix>_<random>``, dropped after."""
    server = FROM_ENV or DEFAULT_URL
    try:
        asyncio.run(run_sql(server, "SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect
        if FROM_ENV:
            pytest.fail(f"MODELBROKER_TEST_DATABASE_URL is unreachable: {type(exc).__name__}: {exc}")
        pytest.skip(f"no PostgreSQL at {safe_url(server)} ({type(exc).__name__}); set MODELBROKER_TEST_DATABASE_URL")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(run_sql(server, f'CREATE DATABASE "{name}"'))
    yield with_database(server, name)
    asyncio.run(run_sql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
