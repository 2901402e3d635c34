"""plugins/ledger/schema.py and the insert: versions, migrations, idempotency, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from modelbroker.plugins.ledger.queries import parse_window, usage_report
from modelbroker.plugins.ledger.schema import MIGRATIONS, RECORD_COLUMNS, SCHEMA_VERSION, migrate
from modelbroker.plugins.storage.database import UnsupportedDatabase, open_database
from modelbroker.plugins.storage.migrations import SchemaTooNew
from modelbroker.plugins.storage.urls import DatabaseURL

from .helpers import at, insert, read_rows, record, run, with_db

DATA = Path(__file__).parent / "data"


def versions(url: str) -> list[tuple[int, str]]:
    async def read(db):
        async with db.reading() as conn:
            rows = await conn.fetch("SELECT version, description FROM schema_version ORDER BY version")
            return [tuple(row) for row in rows]

    return run(with_db(url, read))


def test_migration_records_the_version_and_a_rerun_changes_nothing(database_url):
    assert run(with_db(database_url, migrate)) == SCHEMA_VERSION == len(MIGRATIONS)
    recorded = versions(database_url)
    assert recorded == [(n, description) for n, (description, _) in enumerate(MIGRATIONS, start=1)]
    insert(database_url, [record("kept")])

    assert run(with_db(database_url, migrate)) == SCHEMA_VERSION
    assert versions(database_url) == recorded
    assert [row["request_id"] for row in read_rows(database_url)] == ["kept"]


async def table_shape(conn, table: str) -> tuple[list[str], list[list[str]], dict[str, list[str]]]:
    """Columns in order, the unique keys' columns, and the other indexes' columns, from the catalog."""
    if conn.dialect == "sqlite":
        columns = [row["name"] for row in await conn.fetch(f"PRAGMA table_info({table})")]
        uniques, indexes = [], {}
        for index in await conn.fetch(f"PRAGMA index_list({table})"):
            names = [row["name"] for row in await conn.fetch(f"PRAGMA index_info({index['name']})")]
            if index["origin"] == "u":
                uniques.append(names)
            elif index["origin"] == "c":
                indexes[index["name"]] = names
        return columns, uniques, indexes
    columns = [row[0] for row in await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = ? ORDER BY ordinal_position", (table,))]
    constraint_indexes = {row[0] for row in await conn.fetch(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(?) AND contype IN ('u', 'p')", (table,))}
    uniques, indexes = [], {}
    for name, definition in await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = ?",
            (table,)):
        names = [part.strip().strip('"') for part in definition.rpartition("(")[2].rstrip(")").split(",")]
        if name in constraint_indexes:
            if name != f"{table}_pkey":
                uniques.append(names)
        else:
            indexes[name] = names
    return columns, uniques, indexes


def test_the_migrated_table_has_every_column_unique_key_and_index(database_url):
    async def inspect(db):
        await migrate(db)
        async with db.reading() as conn:
            return await table_shape(conn, "attempts")

    columns, uniques, indexes = run(with_db(database_url, inspect))
    assert columns == ["id", *RECORD_COLUMNS]
    assert uniques == []  # migration 2 dropped UNIQUE (request_id, attempt) for the index below
    assert indexes == {"ix_attempts_time": ["time"], "ix_attempts_provider_time": ["provider", "time"],
                       "uq_attempts_request_uid_attempt": ["request_uid", "attempt"],
                       "ix_attempts_request_id": ["request_id"]}


MIGRATE_WITH_A_SLOW_STEP = textwrap.dedent("""
    import asyncio, os, sys
    from modelbroker.plugins.storage.database import open_database
    from modelbroker.plugins.ledger.schema import MIGRATIONS, migrate

    async def slow_step(conn):
        await conn.execute("CREATE TABLE IF NOT EXISTS migration_runs (pid INTEGER)")
        await conn.execute("INSERT INTO migration_runs VALUES (?)", (os.getpid(),))
        await asyncio.sleep(0.3)

    async def main():
        db = open_database(sys.argv[1])
        try:
            print(await migrate(db, [*MIGRATIONS, ("a slow step", slow_step)]))
        finally:
            await db.close()

    asyncio.run(main())
""")


def test_processes_starting_at_once_apply_each_migration_once(database_url, repo_root):
    processes = [
        subprocess.Popen([sys.executable, "-c", MIGRATE_WITH_A_SLOW_STEP, database_url], cwd=repo_root,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=30)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    assert [out.strip().splitlines()[-1] for out in outputs] == [str(SCHEMA_VERSION + 1)] * 3

    async def runs(db):
        async with db.reading() as conn:
            return await conn.fetchval("SELECT count(*) FROM migration_runs")

    assert run(with_db(database_url, runs)) == 1
    assert [v for v, _ in versions(database_url)] == list(range(1, SCHEMA_VERSION + 2))


def test_a_database_from_a_newer_version_is_refused(database_url):
    insert(database_url, [])

    async def bump(db):
        async with db.writing() as conn:
            await conn.execute("INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                               (SCHEMA_VERSION + 5, "from the future", datetime.now(timezone.utc)))

    run(with_db(database_url, bump))
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 5}"):
        run(with_db(database_url, migrate))


def test_two_requests_sharing_a_client_request_id_keep_all_their_rows(database_url):
    """A client that reuses an x-request-id: before schema version 2 the second request's rows
    were ignored as duplicates, so its cost went missing."""
    first = record("client-id", 1, request_uid="uid-1", cost=0.5)
    second = record("client-id", 1, request_uid="uid-2", cost=0.25)
    insert(database_url, [first, second, dict(second)])
    rows = read_rows(database_url)
    assert sorted((r["request_uid"], r["cost"]) for r in rows) == [("uid-1", 0.5), ("uid-2", 0.25)]
    window = parse_window("2000-01-01", "2100-01-01")
    totals = run(with_db(database_url, lambda db: usage_report(db, window, None)))["totals"]
    assert (totals["requests"], totals["attempts"], totals["cost"]) == (2, 2, 0.75)


def test_the_same_record_twice_is_one_row(database_url):
    first = record("dup-1", 1, cost=0.5)
    insert(database_url, [first, dict(first), record("dup-1", 2)])
    insert(database_url, [dict(first, cost=99.0)])  # a batch written again after a lost acknowledgement
    rows = read_rows(database_url)
    assert [(r["request_id"], r["attempt"], r["cost"]) for r in rows] == [("dup-1", 1, 0.5), ("dup-1", 2, 0.0)]


def test_times_are_stored_and_read_back_in_utc(database_url):
    local = datetime(2025, 3, 1, 1, 30, 15, 250000, tzinfo=timezone(timedelta(hours=2)))
    insert(database_url, [record("t", time=local)])
    (row,) = read_rows(database_url)
    assert row["time"] == local
    assert row["time"].utcoffset() == timedelta(0) and row["time"].hour == 23


def test_booleans_nulls_and_numbers_round_trip(database_url):
    insert(database_url, [record("r", 3, success=False, outcome="partial", error_kind="partial", status=None,
                                 cached_tokens=7, reasoning_tokens=None, tokens_estimated=True,
                                 cost=0.000123456789, latency_ms=12.345, overhead_ms=None)])
    (row,) = read_rows(database_url)
    assert (row["success"], row["tokens_estimated"]) == (False, True)
    assert (row["cached_tokens"], row["reasoning_tokens"], row["status"], row["overhead_ms"]) == (7, None, None, None)
    assert row["cost"] == pytest.approx(0.000123456789, rel=1e-12)
    assert row["latency_ms"] == pytest.approx(12.345)


@pytest.mark.parametrize(("given", "backend", "path"), [
    ("sqlite:///x.db", "sqlite", "x.db"),
    ("sqlite+aiosqlite:////var/lib/mb/x.db", "sqlite", "/var/lib/mb/x.db"),
    ("sqlite://", "sqlite", None),
    ("sqlite:///:memory:", "sqlite", None),
    ("postgres://u:pw@h/db", "postgresql", None),
    ("postgresql://u@h:5433/db", "postgresql", None),
    ("postgresql+asyncpg://u@h/db", "postgresql", None),
])
def test_urls_of_earlier_versions_still_name_their_database(given, backend, path):
    url = DatabaseURL.parse(given)
    assert (url.backend, url.path) == (backend, None if path is None else Path(path))
    if backend == "postgresql":
        assert url.dsn == "postgresql://" + given.partition("://")[2]


def test_an_unsupported_database_is_named_without_its_password():
    with pytest.raises(UnsupportedDatabase, match="unsupported database 'mysql") as caught:
        open_database("mysql+aiomysql://root:hunter2@localhost/db")
    assert "hunter2" not in str(caught.value)


def test_a_database_written_by_the_sqlalchemy_era_gateway_is_read_and_extended(tmp_path):
    """Files from before the ledger dropped SQLAlchemy: same tables, same time text; migration 2 keys
    the rows by request_uid and keeps them all."""
    database = tmp_path / "old.db"
    with sqlite3.connect(database) as conn:
        conn.executescript((DATA / "sqlalchemy-era.sql").read_text())
    url = f"sqlite:///{database}"
    assert run(with_db(url, migrate)) == SCHEMA_VERSION
    insert(url, [record("new-0", time=at("2025-06-01T12:03:00"), provider="b", cost=1.0, latency_ms=200.0)])

    rows = read_rows(url)
    assert [r["request_id"] for r in rows] == ["new-0", "old-0", "old-1", "old-2"]
    assert rows[1]["time"] == datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    assert [r["request_uid"] for r in rows[1:]] == ["old-0", "old-1", "old-2"]  # migration 2's backfill
    assert (rows[1]["success"], rows[2]["success"]) == (True, False)
    window = parse_window("2025-06-01T12:00:30", "2025-06-02")  # compared as text: must match the old format
    report = run(with_db(url, lambda db: usage_report(db, window, "provider")))
    by_provider = {g["key"]: g for g in report["groups"]}
    assert (report["totals"]["requests"], report["totals"]["cost"]) == (3, 1.5)
    assert (by_provider["a"]["failures"], by_provider["b"]["p50_latency_ms"]) == (1, 200.0)
