"""The SQL examples in docs/ledger.md run on the database they are written for, and find rows."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import pytest

from .helpers import insert, record, run, with_db

LEDGER_MD = Path(__file__).resolve().parents[3] / "docs" / "ledger.md"
SQLITE_ONLY = ("date('now'",)
POSTGRES_ONLY = ("current_date",)
#: The docs say how to write these on PostgreSQL.
TO_POSTGRES = {"datetime('now', '-7 days')": "now() - interval '7 days'"}


def sql_examples() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", LEDGER_MD.read_text(encoding="utf-8"), re.S)


def statements_for(dialect: str) -> list[str]:
    found = []
    for block in sql_examples():
        if any(s in block for s in (POSTGRES_ONLY if dialect == "sqlite" else SQLITE_ONLY)):
            continue
        if dialect == "postgresql":
            for sqlite_text, postgres_text in TO_POSTGRES.items():
                block = block.replace(sqlite_text, postgres_text)
        found.extend(s.strip() for s in block.split(";") if s.strip())
    return found


def test_the_docs_have_the_promised_examples():
    text = " ".join(sql_examples())
    for words in ("sum(cost)", "failure_pct", "p95_ms", "outcome = 'rejected'"):
        assert words in text


def test_every_sql_example_runs_and_finds_rows(database_url):
    dialect = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    midnight = datetime.combine(datetime.now(timezone.utc).date(), time(), tzinfo=timezone.utc)
    insert(database_url, [
        record("y1", time=midnight - timedelta(hours=12), cost=0.5, total_tokens=10),
        record("f1", 1, success=False, outcome="failed", error_kind="status", status=500, provider="a"),
        record("f1", 2, provider="b", latency_ms=30.0),
        record("r1", 0, success=False, outcome="rejected", status=404, route="/generate", error="no such model",
               provider=None, model=None, latency_ms=None),
    ])
    statements = statements_for(dialect)
    assert len(statements) >= 5

    async def execute_all(db):
        results = []
        async with db.reading() as conn:
            if dialect == "postgresql":
                await conn.execute("SET TIME ZONE 'UTC'")
            for statement in statements:
                results.append(await conn.fetch(statement))
        return results

    for statement, rows in zip(statements, run(with_db(database_url, execute_all)), strict=True):
        assert rows, f"no row from:\n{statement}"


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_each_dialect_gets_a_spend_query(dialect):
    assert sum("sum(cost)" in s for s in statements_for(dialect)) == 1
