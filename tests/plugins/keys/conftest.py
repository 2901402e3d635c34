"""Fixtures for the client-key tests: a key database, the CLI, a Redis of the machine's.

Redis: ``MODELBROKER_TEST_REDIS_URL`` names it; when set and unreachable, the Redis
tests fail. Unset, ``redis://127.0.0.1:6379/15`` is used if it answers, else those
tests are skipped. Runs do not collide: every test names its keys uniquely, so its
counters (``spend:<name>:...``, ``rpm:<name>:...``) are its own, and they expire.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from client_keys import add_key as add_key  # the tests here import it from this conftest
from testdb import DEFAULT_URL as DEFAULT_PG_URL  # noqa: F401 - the keys tests import these from here
from testdb import FROM_ENV as PG_URL_FROM_ENV  # noqa: F401
from testdb import database_of, own_database, with_database  # noqa: F401
from testdb import run_sql as _pg

from modelbroker.plugins.keys import GUARD_NAME
from modelbroker.plugins.storage.database import Database, placeholders

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
#: Read at import: tests/conftest.py removes every MODELBROKER_* variable from each test's environment.
REDIS_URL_FROM_ENV = os.environ.get("MODELBROKER_TEST_REDIS_URL")
REPO_ROOT = Path(__file__).resolve().parents[3]
#: The key table is re-read this often in these tests (the default is 2 s).
REFRESH_S = 0.2
CLI_TIMEOUT_S = 30.0


def unique(name: str) -> str:
    """A key name no other test (or run, sharing a Redis) uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"




async def insert_attempts(db: Database, attempts: list[dict]) -> None:
    """Write ``attempts`` (column -> value, ``time`` an aware datetime) to the ledger's table."""
    async with db.writing() as conn:
        for attempt in attempts:
            columns = list(attempt)
            await conn.execute(f"INSERT INTO attempts ({', '.join(columns)}) VALUES ({placeholders(len(columns))})",
                               [attempt[column] for column in columns])


def wait_for(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up after {timeout} s waiting for {what}"
        time.sleep(0.02)


def clear_of_minute_end(margin_s: float = 5.0) -> None:
    """Wait, if need be, so that the next ``margin_s`` seconds lie in one clock minute
    (the rate windows are clock minutes; a test must not straddle two)."""
    left = 60.0 - time.time() % 60.0
    if left < margin_s:
        time.sleep(left + 0.05)


def guard_of(gw):
    """The running gateway's ``KeyGuard``."""
    return gw.gateway.pm.get_plugin(GUARD_NAME)


def keys_config(*providers, **extra) -> dict:
    """providers.yaml with these providers and the key table re-read every REFRESH_S."""
    return {"providers": list(providers), "plugins": {"keys": {"refresh_s": REFRESH_S}}, **extra}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The database of the test's gateways, keys and CLI: an SQLite file in tmp_path."""
    return f"sqlite:///{(tmp_path / 'modelbroker.db').as_posix()}"


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(db_url, monkeypatch, capsys):
    """``cli(*args) -> Ran``: ``modelbroker keys ...`` run in this process, on ``db_url``."""
    from modelbroker._cli.main import main

    monkeypatch.setenv("MODELBROKER_DATABASE_URL", db_url)

    def run(*args: str) -> Ran:
        capsys.readouterr()
        try:
            status = main(["keys", *args])
        except SystemExit as exc:  # argparse's usage errors
            status = exc.code
        out = capsys.readouterr()
        return Ran(status, out.out, out.err)

    return run


@pytest.fixture
def cli_process(subprocess_env, db_url):
    """``cli_process(*args) -> CompletedProcess``: ``modelbroker keys ...`` in another process."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "modelbroker", "keys", *args], cwd=REPO_ROOT, capture_output=True, text=True,
            env=subprocess_env(MODELBROKER_DATABASE_URL=db_url), timeout=CLI_TIMEOUT_S,
        )

    return run


def _reachable(url: str) -> str | None:
    host_port = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host, int(port or 6379)), timeout=0.5):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis (skipped or failed as the module docstring says)."""
    url = REDIS_URL_FROM_ENV or DEFAULT_REDIS_URL
    problem = _reachable(url)
    if problem and REDIS_URL_FROM_ENV:
        pytest.fail(f"MODELBROKER_TEST_REDIS_URL={url} is unreachable: {problem}")
    if problem:
        pytest.skip(f"no Redis at {url} ({problem}); set MODELBROKER_TEST_REDIS_URL to run these tests")
    return url


# --- PostgreSQL, as the ledger's tests use it -------------------------------------------------

@pytest.fixture(scope="session")
def postgres_url():
    """A database of this run's own on the PostgreSQL server (tests/testdb.py)."""
    yield from own_database("mb_keys_test")


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request, db_url) -> str:
    """Each test that takes it runs on an SQLite file, then on an emptied PostgreSQL database."""
    if request.param == "sqlite":
        return db_url
    url = request.getfixturevalue("postgres_url")
    asyncio.run(_pg(url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public"))
    return url
