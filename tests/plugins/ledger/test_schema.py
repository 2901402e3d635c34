"""plugins/ledger/schema.py and the insert: versions, migrations, idempotency, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from plugins.ledger.database import UnsupportedDatabase, async_url, make_engine, writing
from plugins.ledger.schema import MIGRATIONS, SCHEMA_VERSION, SchemaTooNew, attempts, migrate, schema_version

from .helpers import insert, read_rows, record, run, with_engine


def versions(url: str) -> list[tuple[int, str]]:
    async def read(engine):
        async with engine.connect() as conn:
            query = sa.select(schema_version.c.version, schema_version.c.description).order_by("version")
            return [tuple(row) for row in await conn.execute(query)]

    return run(with_engine(url, read))


def test_migration_records_the_version_and_a_rerun_changes_nothing(database_url):
    assert run(with_engine(database_url, migrate)) == SCHEMA_VERSION == len(MIGRATIONS)
    recorded = versions(database_url)
    assert recorded == [(n, description) for n, (description, _) in enumerate(MIGRATIONS, start=1)]
    insert(database_url, [record("kept")])

    assert run(with_engine(database_url, migrate)) == SCHEMA_VERSION
    assert versions(database_url) == recorded
    assert [row["request_id"] for row in read_rows(database_url)] == ["kept"]


def test_the_migrated_table_has_every_column_unique_key_and_index(database_url):
    async def inspect(engine):
        await migrate(engine)
        async with engine.connect() as conn:
            return await conn.run_sync(lambda sync: (
                [c["name"] for c in sa.inspect(sync).get_columns("attempts")],
                sa.inspect(sync).get_unique_constraints("attempts"),
                {i["name"]: i["column_names"] for i in sa.inspect(sync).get_indexes("attempts")},
            ))

    columns, uniques, indexes = run(with_engine(database_url, inspect))
    assert columns == [c.name for c in attempts.columns]
    assert [u["column_names"] for u in uniques] == [["request_id", "attempt"]]
    assert indexes["ix_attempts_time"] == ["time"]
    assert indexes["ix_attempts_provider_time"] == ["provider", "time"]


MIGRATE_WITH_A_SLOW_STEP = textwrap.dedent("""
    import asyncio, os, sys, time
    import sqlalchemy as sa
    from plugins.ledger.database import make_engine
    from plugins.ledger.schema import MIGRATIONS, migrate

    def slow_step(conn):
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS migration_runs (pid INTEGER)"))
        conn.execute(sa.text("INSERT INTO migration_runs VALUES (:pid)"), {"pid": os.getpid()})
        time.sleep(0.3)

    async def main():
        engine = make_engine(sys.argv[1])
        try:
            print(await migrate(engine, [*MIGRATIONS, ("a slow step", slow_step)]))
        finally:
            await engine.dispose()

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

    async def runs(engine):
        async with engine.connect() as conn:
            return (await conn.execute(sa.text("SELECT count(*) FROM migration_runs"))).scalar()

    assert run(with_engine(database_url, runs)) == 1
    assert [v for v, _ in versions(database_url)] == list(range(1, SCHEMA_VERSION + 2))


def test_a_database_from_a_newer_version_is_refused(database_url):
    insert(database_url, [])

    async def bump(engine):
        async with writing(engine) as conn:
            await conn.execute(schema_version.insert().values(
                version=SCHEMA_VERSION + 5, description="from the future", applied_at=datetime.now(timezone.utc)))

    run(with_engine(database_url, bump))
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 5}"):
        run(with_engine(database_url, migrate))


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


@pytest.mark.parametrize(("given", "used"), [
    ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ("postgres://u:pw@h/db", "postgresql+asyncpg://u:pw@h/db"),
    ("postgresql://u@h:5433/db", "postgresql+asyncpg://u@h:5433/db"),
    ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
])
def test_urls_get_the_async_driver(given, used):
    assert async_url(given) == used


def test_an_unsupported_database_is_named_without_its_password():
    with pytest.raises(UnsupportedDatabase, match="unsupported database 'mysql'") as caught:
        make_engine("mysql+aiomysql://root:hunter2@localhost/db")
    assert "hunter2" not in str(caught.value)
