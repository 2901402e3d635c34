"""The key table on SQLite and PostgreSQL, the key format, and the budget periods."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from modelbroker import ConfigError
from modelbroker._routing.state import MemoryState
from modelbroker.plugins.keys.keygen import bearer_token, check_name, hash_key, key_prefix, new_key, same_hash
from modelbroker.plugins.keys.limits import DAY, MONTH, Limits, over_budget, period_end, period_start, spend_key
from modelbroker.plugins.keys.store import (
    KEYS,
    ClientKey,
    KeyNameTaken,
    insert_key,
    ledger_spend,
    load_keys,
    migrate,
    revoke_key,
)
from modelbroker.plugins.ledger import schema as ledger_schema
from modelbroker.plugins.storage.database import open_database

from .conftest import add_key, insert_attempts, keys_config


def row(name: str, **limits) -> ClientKey:
    key = new_key()
    return ClientKey(name=name, prefix=key_prefix(key), key_hash=hash_key(key),
                     created_at=datetime.now(timezone.utc), **limits)


async def with_databases(url: str, work, databases: int = 1):
    opened = [open_database(url) for _ in range(databases)]
    try:
        return await work(*opened)
    finally:
        for db in opened:
            await db.close()


def test_the_table_migrates_once_from_many_processes_and_keeps_names_unique(any_db_url):
    async def work(one, two):
        assert await asyncio.gather(migrate(one), migrate(two)) == [3, 3]  # racing, as two gateways do
        async with one.reading() as conn:
            versions = [tuple(r) for r in await conn.fetch("SELECT version FROM keys_schema_version ORDER BY version")]
        assert versions == [(1,), (2,), (3,)]
        await insert_key(one, row("alice", budget_daily=1.5, rpm=10, models=("a", "b")))
        with pytest.raises(KeyNameTaken):
            await insert_key(two, row("alice"))
        assert await revoke_key(two, "alice") == 1
        assert await revoke_key(two, "alice") == 0
        await insert_key(one, row("alice", tpm=100))  # a revoked name may be used again
        return await load_keys(two)

    old, new = asyncio.run(with_databases(any_db_url, work, databases=2))
    assert (old.name, old.budget_daily, old.rpm, old.models, old.revoked) == ("alice", 1.5, 10, ("a", "b"), True)
    assert (new.name, new.tpm, new.models, new.revoked) == ("alice", 100, None, False)
    assert new.created_at.tzinfo == timezone.utc


def test_keys_made_before_roles_are_client_keys(any_db_url):
    """A table at version 1 (as the gateway before admin keys left it) gains ``role``; its keys are clients."""
    old = row("old-timer", rpm=5)

    async def work(db):
        assert await KEYS.migrate(db, KEYS.migrations[:1]) == 1
        async with db.writing() as conn:  # the INSERT of version 1, which knew no role
            await conn.execute("INSERT INTO client_keys (name, prefix, key_hash, rpm, created_at) VALUES (?, ?, ?, ?, ?)",
                               (old.name, old.prefix, old.key_hash, old.rpm, old.created_at))
        assert await migrate(db) == 3
        await insert_key(db, row("ops", role="admin"))
        return await load_keys(db)

    before, admin = asyncio.run(with_databases(any_db_url, work))
    assert (before.name, before.rpm, before.role, before.admin) == ("old-timer", 5, "client", False)
    assert before.max_cost_per_request is None  # no ceiling for the keys made before there were any
    assert (admin.name, admin.role, admin.admin) == ("ops", "admin", True)


def test_the_spend_is_read_from_the_ledger(any_db_url):
    now = datetime.now(timezone.utc)
    day, month = period_start(DAY, now), period_start(MONTH, now)

    def attempt(n: int, client: str, time: datetime, cost: float) -> dict:
        return {"request_id": f"r{n}", "attempt": 1, "time": time, "client": client, "success": True,
                "outcome": "ok", "cost": cost}

    async def work(db):
        assert await ledger_spend(db, ["alice"], day, month) == {}  # no ledger at all
        await ledger_schema.migrate(db)
        await insert_attempts(db, [
            attempt(1, "alice", day, 0.5), attempt(2, "alice", month, 0.25),
            attempt(3, "alice", month - timedelta(seconds=1), 100.0), attempt(4, "bob", day, 7.0),
        ])
        return await ledger_spend(db, ["alice", "carol"], day, month)

    spend = asyncio.run(with_databases(any_db_url, work))
    assert spend == {"alice": (pytest.approx(0.75 if day == month else 0.5), pytest.approx(0.75))}


def test_keys_in_postgresql_guard_a_gateway(gateway, provider, upstream, postgres_url):
    asyncio.run(_pg_reset(postgres_url))
    key = add_key(postgres_url, "pg-client")
    gw = gateway(keys_config(provider("a")), database_url=postgres_url)
    assert gw.generate({"prompt": "hi"}).status_code == 401
    assert gw.generate({"prompt": "hi"}, headers={"authorization": f"Bearer {key}"}).status_code == 200


async def _pg_reset(url: str) -> None:
    from .conftest import _pg

    await _pg(url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")


def test_a_key_is_random_hashed_and_recognisable():
    key = new_key()
    assert key.startswith("mb-") and len(key) == 46 and new_key() != key
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert key_prefix(key) == key[:11]
    assert same_hash(hash_key(key), hash_key(key)) and not same_hash(hash_key(key), hash_key(key + "x"))
    assert bearer_token(f"Bearer {key}") == key and bearer_token(f"bearer  {key} ") == key
    assert bearer_token(None) is None and bearer_token("Basic abc") is None and bearer_token("Bearer ") is None
    assert check_name("team.a-1@x") == "team.a-1@x"
    for bad in ("", "a:b", "-a", "a b", "x" * 65):
        with pytest.raises(ValueError, match="invalid key name"):
            check_name(bad)


@pytest.mark.parametrize(("now", "day_end", "month_end"), [
    ("2025-01-31T23:59:59", "2025-02-01", "2025-02-01"),
    ("2024-02-29T12:00:00", "2024-03-01", "2024-03-01"),
    ("2025-12-31T00:00:00", "2026-01-01", "2026-01-01"),
    ("2025-06-01T00:00:00", "2025-06-02", "2025-07-01"),
])
def test_budgets_reset_at_midnight_and_on_the_first_utc(now, day_end, month_end):
    moment = datetime.fromisoformat(now).replace(tzinfo=timezone.utc)
    assert period_end(DAY, moment) == datetime.fromisoformat(day_end).replace(tzinfo=timezone.utc)
    assert period_end(MONTH, moment) == datetime.fromisoformat(month_end).replace(tzinfo=timezone.utc)
    assert period_start(MONTH, moment).day == 1 and period_start(DAY, moment) <= moment
    assert spend_key("k", DAY, moment) == f"spend:k:day:{now[:10]}"
    assert spend_key("k", MONTH, moment) == f"spend:k:month:{now[:7]}"


def test_the_budget_refusal_says_which_budget_and_when_it_resets():
    now = datetime(2025, 3, 31, 22, 0, tzinfo=timezone.utc)
    daily = over_budget("alice", DAY, 1.0000004, 1.0, now)
    assert daily.status == 429 and daily.code == "budget_exceeded"
    assert daily.message == ("key 'alice' has used its daily budget: 1 of 1 spent today (UTC); "
                             "it resets at 2025-04-01T00:00:00Z (midnight UTC)")
    assert daily.headers == {"retry-after": "7200", "x-should-retry": "false"}
    monthly = over_budget("alice", MONTH, 12.5, 10.0, now)
    assert "monthly budget: 12.5 of 10 spent this month" in monthly.message
    assert "2025-04-01T00:00:00Z (the first of next month, UTC)" in monthly.message
    assert monthly.details == {"budget": "monthly", "resets_at": "2025-04-01T00:00:00Z"}


async def test_the_ledger_seeds_only_counters_that_do_not_exist():
    state = MemoryState()
    limits = Limits(state)
    now = datetime.now(timezone.utc)
    await state.add(spend_key("kept", DAY, now), 0.1, 60)
    await limits.seed({"kept": (5.0, 6.0), "fresh": (1.0, 2.0)})
    assert await state.get(spend_key("kept", DAY, now)) == pytest.approx(0.1)
    assert await state.get(spend_key("kept", MONTH, now)) == pytest.approx(6.0)
    assert await state.get(spend_key("fresh", DAY, now)) == pytest.approx(1.0)
    assert await state.get(spend_key("fresh", MONTH, now)) == pytest.approx(2.0)


@pytest.mark.parametrize(("written", "expected"), [
    ("{}", 2.0), ("{refresh_s: 0.2}", 0.2), ("{refresh_s: '3'}", 3.0),
    ("{refresh_s: 0}", "plugins.keys.refresh_s: must be > 0"),
    ("{refresh_s: -1}", "plugins.keys.refresh_s: must be > 0"),
    ("{refresh_s: true}", "plugins.keys.refresh_s: must be a number of seconds above 0, not true or false"),
    ("{refresh_s: null}", "plugins.keys.refresh_s: must be a number"),
    ("{refresh_s: .inf}", "plugins.keys.refresh_s: must be a finite number"),
    ("{refresh: 2}", "plugins.keys.refresh: unknown field; check its spelling"),
])
def test_the_refresh_interval_is_checked_where_providers_yaml_is(written, expected, write_config):
    """The block is validated when the gateway is built (serve, check, reload), not in on_startup."""
    from modelbroker._config.settings import Settings
    from modelbroker._routing.gateway import Gateway

    path = write_config(f"providers: []\nplugins:\n  keys: {written}\n")
    settings = Settings(config=path, log_file="")
    if isinstance(expected, float):
        assert Gateway.from_settings(settings).config.plugins.settings_for("keys").refresh_s == expected
        return
    with pytest.raises(ConfigError) as caught:
        Gateway.from_settings(settings)
    assert str(caught.value) == f"providers.yaml: {expected}"


def test_a_key_table_written_by_the_sqlalchemy_era_gateway_is_read_and_extended(tmp_path):
    """tests/plugins/ledger/data/sqlalchemy-era.sql: a key and a ledger from before plain SQL."""
    database = tmp_path / "old.db"
    dump = Path(__file__).parents[1] / "ledger" / "data" / "sqlalchemy-era.sql"
    with sqlite3.connect(database) as conn:
        conn.executescript(dump.read_text())

    async def work(db):
        assert await migrate(db) == 3
        (alice,) = await load_keys(db)
        await insert_key(db, row("bob"))
        spend = await ledger_spend(db, ["alice"], datetime(2025, 6, 1, 12, 0, 30, tzinfo=timezone.utc),
                                   datetime(2025, 6, 1, tzinfo=timezone.utc))
        return alice, [key.name for key in await load_keys(db)], spend

    alice, names, spend = asyncio.run(with_databases(f"sqlite:///{database}", work))
    assert (alice.name, alice.budget_daily, alice.models, alice.role) == ("alice", 1.0, ("m",), "client")
    assert alice.created_at == datetime(2025, 6, 1, tzinfo=timezone.utc) and not alice.revoked
    assert names == ["alice", "bob"]
    assert spend == {"alice": (0.0, 0.25)}  # 0.25 at 12:00:00, before the day's start given; 0.0 after
